"""`python -m benchmarks.perf NAME`: run one performance measurement and print its ratios."""
import argparse
import importlib

BENCHES = {"extract": "benchmarks.perf.extract", "slim_step": "benchmarks.perf.slim_step"}

parser = argparse.ArgumentParser(prog="python -m benchmarks.perf")
parser.add_argument("name", choices=sorted(BENCHES))
args = parser.parse_args()
importlib.import_module(BENCHES[args.name]).run()
