"""The GPU check's code path, at tiny sizes on whatever device there is (numbers are not checked here)."""
import pytest

from benchmarks.perf import gpu


@pytest.mark.slow
def test_quick_gpu_check_prints_every_row(capsys):
    out = gpu.run(quick=True)
    labels = [label for label, _, _ in out["rows"]]
    assert sum("step, AMP" in label for label in labels) == 4   # two methods, with and without channels_last
    assert any(label.startswith("input path, PIL") for label in labels)
    assert any(label.startswith("input path, DALI") for label in labels)
    assert labels[-1].startswith("linear-fast features")
    printed = capsys.readouterr().out
    assert printed.startswith("GPU check on") and "img/s" in printed and "pairs/s" in printed
