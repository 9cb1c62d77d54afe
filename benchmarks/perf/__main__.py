"""`python -m benchmarks.perf NAME`: run one performance measurement and print its ratios."""
import argparse
import importlib

BENCHES = {name: f"benchmarks.perf.{name}" for name in ("augment", "extract", "gpu", "loader", "slim_step")}

parser = argparse.ArgumentParser(prog="python -m benchmarks.perf")
parser.add_argument("name", choices=sorted(BENCHES))
args = parser.parse_args()
importlib.import_module(BENCHES[args.name]).run()
