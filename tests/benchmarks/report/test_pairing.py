"""Slimmable sub-networks beside their individually pretrained baselines, from known rows."""
import csv
import io
import json

import pytest

from benchmarks.report import build, html_columns, plot_png, to_csv, to_html, to_markdown, to_terminal
from benchmarks.report.pairing import CheckpointMeta, cost_ratio, find_pairs
from tests.benchmarks.report.test_leaderboard import row

SLIM_COST = {"train_flops": 10e15, "device_seconds": 100.0}


def meta(ckpt, recipe="r1", individual=None, cost=None, diagnosis=None):
    return {"checkpoint_meta_json": json.dumps({"recipe_digest": recipe, "individual": individual, "cost": cost,
                                                **({"diagnosis": diagnosis} if diagnosis else {})})}


def baseline(of, subnet, cost):
    return {"of_recipe_digest": of, "subnet": subnet, "method": "slimclr-mocov2"}, cost


def rows():
    """Slimmable checkpoint a (recipe r1) at w1.0/w0.5; baselines: b (r1, w0.5), c (r1, w0.25: a has no
    w0.25 row), d (another recipe, w0.5), and e, a second slimmable checkpoint of r2."""
    out = []
    extra = {"a": meta("a", cost=SLIM_COST),
             "b": meta("b", "rb", {"of_recipe_digest": "r1", "subnet": "w0.5"}, {"train_flops": 3e15, "device_seconds": 20.0}),
             "c": meta("c", "rc", {"of_recipe_digest": "r1", "subnet": "w0.25"}, {"train_flops": 1e15, "device_seconds": 5.0}),
             "d": meta("d", "rd", {"of_recipe_digest": "r2", "subnet": "w0.5"}, {"train_flops": 9e15, "device_seconds": 9.0}),
             "e": meta("e", "r3", cost=SLIM_COST)}
    values = {("a", "w1.0"): 70.0, ("a", "w0.5"): 61.0, ("b", "w0.5"): 63.5, ("c", "w0.25"): 50.0,
              ("d", "w0.5"): 40.0, ("e", "w0.5"): 20.0}
    for (ckpt, subnet), top1 in values.items():
        out.append({**row(f"k-{ckpt}", "fmnist-knn", subnet, "top1", top1, ckpt=ckpt, protocol="knn"), **extra[ckpt]})
        out.append({**row(f"k-{ckpt}", "fmnist-knn", subnet, "top5", 99.0, ckpt=ckpt, protocol="knn"), **extra[ckpt]})
        out.append({**row(f"c-{ckpt}", "complexity", subnet, "macs", 1e9 if subnet == "w1.0" else 0.3e9, ckpt=ckpt),
                    **extra[ckpt]})
    return out


def test_only_a_baseline_of_the_same_recipe_at_that_subnet_is_paired():
    board = build(rows())
    pairs = [(r["checkpoint"][0], r["subnet"], r["baseline"][0]) for r in board.comparison.rows]
    # c names w0.25, which a has no results for: paired, but no metric to compare; d is of recipe r2
    assert pairs == [("a", "w0.25", "c"), ("a", "w0.5", "b")]
    by_subnet = {r["subnet"]: r for r in board.comparison.rows}
    assert by_subnet["w0.5"]["fmnist-knn/top1"] == (61.0, 63.5)
    assert "fmnist-knn/top1" not in by_subnet["w0.25"]
    [ratio] = board.comparison.ratios
    assert ratio["train_flops"] == pytest.approx(10 / (3 + 1)) and ratio["device_seconds"] == pytest.approx(100 / 25)


def test_pairing_uses_the_records_not_the_file_names():
    a = CheckpointMeta("a", "demo-slimclr-mocov2@aa", "r1")
    named_like_it = CheckpointMeta("x", "demo-slimclr-mocov2-individual-w0.5@xx", "rx",
                                   {"of_recipe_digest": "other", "subnet": "w0.5"})
    really = CheckpointMeta("y", "something@yy", "ry", {"of_recipe_digest": "r1", "subnet": "w0.5"})
    assert [p.baseline.digest for p in find_pairs([a, named_like_it, really])] == ["y"]
    assert cost_ratio(a, [really], "train_flops") is None          # no cost record: unknown, not a number


def test_every_format_carries_the_comparison():
    board = build(rows())
    md = to_markdown(board)
    assert "pretrained alone" in md and "| a-ckpt@aaaaaaaa | w0.5 | b-ckpt@bbbbbbbb | 61.00 / 63.50 (-2.50) |" in md
    assert "2.50x training FLOPs, 4.00x device-seconds" in md
    table = list(csv.DictReader(io.StringIO(to_csv(board))))
    a_half = next(r for r in table if r["checkpoint"].startswith("a-") and r["subnet"] == "w0.5")
    assert a_half["individual_baseline"] == "b-ckpt@bbbbbbbb" and float(a_half["fmnist-knn/top1_individual"]) == 63.5
    assert float(a_half["cost_ratio_train_flops"]) == pytest.approx(2.5)
    page = to_html(board, plot_png(board))
    assert 'id="comparison"' in page and "61.00 / 63.50 (-2.50)" in page


def test_the_terminal_view_is_compact_and_shows_the_comparison():
    board = build(rows())
    text = to_terminal(board)
    assert all(len(line) <= 120 for line in text.splitlines())
    header = text.splitlines()[0].split()
    assert header == ["checkpoint", "subnet", "params", "MACs", "knn"]     # headline metrics only (no top5)
    assert "slimmable vs pretrained alone" in text and "61.00 / 63.50 (-2.50)" in text


COLLAPSED = "tells no two images apart (cosine to positive 0.913, other fresh keys 0.913, queue 0.860)"


def test_a_pair_whose_pretraining_diagnosed_a_network_carries_the_warning_in_every_format():
    diagnosed = rows()
    for r in diagnosed:
        if r["checkpoint_digest"] == "b" * 64:     # the w0.5 baseline collapsed
            r.update(meta("b", "rb", {"of_recipe_digest": "r1", "subnet": "w0.5"},
                          {"train_flops": 3e15, "device_seconds": 20.0}, [{"subnet": "w0.5", "message": COLLAPSED}]))
        if r["checkpoint_digest"] == "a" * 64:     # the slimmable run diagnosed its w0.25 only: not the w0.5 pair's
            r.update(meta("a", cost=SLIM_COST, diagnosis=[{"subnet": "w0.25", "message": "x"}]))
    board = build(diagnosed)
    by_subnet = {r["subnet"]: r for r in board.comparison.rows}
    assert [(w["checkpoint"][0], w["alone"]) for w in by_subnet["w0.5"]["warnings"]] == [("b", True)]
    assert [(w["checkpoint"][0], w["alone"]) for w in by_subnet["w0.25"]["warnings"]] == [("a", False)]
    md = to_markdown(board)
    assert "| a-ckpt@aaaaaaaa | w0.5 | b-ckpt@bbbbbbbb ! | 61.00 / 63.50 (-2.50) |" in md
    assert f"! b-ckpt@bbbbbbbb: {COLLAPSED}" in md and "! a-ckpt@aaaaaaaa w0.25: x" in md
    text = to_terminal(board)
    assert f"! b-ckpt: {COLLAPSED}" in text and all(len(line) <= 120 for line in text.splitlines())
    narrow = to_terminal(board, max_width=40)   # long notes wrap between words: nothing is cut
    assert " ".join(narrow.split()).count(" ".join(f"! b-ckpt: {COLLAPSED}".split())) == 1
    assert len(next(ln for ln in narrow.splitlines() if ln.startswith("! b-"))) <= 40
    table = list(csv.DictReader(io.StringIO(to_csv(board))))
    a_half = next(r for r in table if r["checkpoint"].startswith("a-") and r["subnet"] == "w0.5")
    assert a_half["pair_warnings"] == f"b-ckpt@bbbbbbbb: {COLLAPSED}"
    assert f"! b-ckpt@bbbbbbbb: {COLLAPSED}" in to_html(board, None)
    assert "!" not in to_markdown(build(rows()))       # without a diagnosis, no mark


def test_html_groups_each_suite_with_its_headline_first_and_hides_the_rest():
    columns = html_columns(build(rows()))
    metric = [(c, cls) for c, cls in columns if "/" in c]
    assert metric == [("fmnist-knn/top1", "group"), ("fmnist-knn/top5", "group extra")]
