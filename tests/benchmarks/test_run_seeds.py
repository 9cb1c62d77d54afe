"""Which seeds `bench run` runs: --seeds, else --seed, else the suite's own (MoCo's VOC protocol: 5 trials)."""
import argparse

from benchmarks.commands.run import run_seeds
from benchmarks.suites import load_suite


def args(seed=None, seeds=None):
    return argparse.Namespace(seed=seed, seeds=seeds)


def test_a_suite_with_seeds_runs_them_all_by_default():
    voc = load_suite("voc-det")
    assert run_seeds(args(), voc) == [0, 1, 2, 3, 4]
    assert run_seeds(args(seed=3), voc) == [3] and run_seeds(args(seeds=[7, 8]), voc) == [7, 8]


def test_a_suite_without_seeds_runs_seed_zero():
    assert run_seeds(args(), load_suite("fmnist-knn")) == [0]
