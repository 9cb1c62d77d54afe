"""The demo's DSPNet rows are named for the demo recipe (``demo-dspnet``) in every leaderboard format:
they come from SlimBench's demo recipe, not from DSPNet's published one."""
import re

from benchmarks.report import build, to_csv, to_html, to_markdown, to_terminal
from tests.benchmarks.report.test_leaderboard import row


def demo_rows():
    out = []
    for ckpt, folder in (("d", "demo-dspnet"), ("s", "demo-slimclr-mocov2")):
        for subnet, top1 in (("w1.0", 70.0), ("w0.5", 60.0)):
            r = row(f"k-{ckpt}", "fmnist-knn", subnet, "top1", top1, ckpt=ckpt, protocol="knn")
            out.append({**r, "checkpoint_path": f"/r/pretrain/{folder}/checkpoint.pt",
                        "checkpoint_method": "dspnet-byol" if ckpt == "d" else "slimclr-mocov2"})
    return out


def test_every_format_names_the_demo_recipe():
    board = build(demo_rows())
    for text in (to_markdown(board), to_csv(board), to_html(board), to_terminal(board)):
        assert "demo-dspnet" in text and "demo-slimclr-mocov2" in text
        # never the bare method name as a row label, which would read as DSPNet's own recipe
        assert not re.search(r"(?<![-\w])dspnet(?![-\w])", text)
