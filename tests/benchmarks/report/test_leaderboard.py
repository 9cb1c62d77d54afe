"""The leaderboard from known rows: cells per seed, columns per suite config and device, md/csv/html/png output."""
import csv
import io
import json
from html.parser import HTMLParser

import pytest

from benchmarks.digests import config_digest
from benchmarks.report import build, plot_png, render, to_csv, to_html, to_long_csv, to_markdown


def row(run_id, suite, subnet, metric, value, status="finished", ended="2026-01-01T00:00:01", ckpt="a",
        protocol=None, seed=0, params=None, variant=None, device="cpu", info=None):
    """A row as ResultsStore.rows() returns it; ``params`` is the resolved params block of the run's suite."""
    protocol = protocol or suite
    resolved = {"name": suite, "protocol": protocol, "dataset": {}, "params": params or {}, "subnets": [subnet],
                "seed": seed}
    return {"run_id": run_id, "suite": suite, "suite_digest": "s", "suite_json": json.dumps(resolved),
            "variant_json": json.dumps(variant or {}), "seed": seed, "protocol": protocol,
            "checkpoint_digest": ckpt * 64, "checkpoint_path": f"/c/{ckpt}-ckpt.pt", "checkpoint_method":
            "slimclr-mocov2" if ckpt == "a" else "random", "checkpoint_widths": json.dumps([1.0, 0.5]),
            "subnet": subnet, "metric": metric, "value": value, "code_version": "t", "host": "h", "device": device,
            "info_json": json.dumps(info or {}), "started_at": "2026-01-01T00:00:00",
            "ended_at": None if status == "running" else ended, "status": status}


ROWS = [
    row("r1", "knn", "w1.0", "top1", 60.0, ended="2026-01-01T00:00:01"),
    row("r2", "knn", "w1.0", "top1", 70.0, ended="2026-01-02T00:00:00"),   # later, same seed: wins
    row("r2", "knn", "w0.5", "top1", 55.0, ended="2026-01-02T00:00:00"),
    row("r3", "knn", "w1.0", "top1", 99.0, status="failed"),
    row("r4", "knn", "w1.0", "top1", 98.0, status="running"),
    row("r5", "complexity", "w1.0", "params", 11.2e6),
    row("r5", "complexity", "w1.0", "macs", 0.56e9),
    row("r5", "complexity", "w0.5", "params", 2.8e6),
    row("r5", "complexity", "w0.5", "macs", 0.14e9),
    row("r6", "knn", "w0.5", "top1", 30.0, ckpt="b"),
    row("r7", "complexity", "w0.5", "macs", 0.14e9, ckpt="b"),
    row("r8", "cx224", "w0.5", "macs", 9e9, ckpt="b", protocol="complexity", ended="2026-01-03T00:00:00"),
]

SEEDS = [row(f"s{seed}", "knn", "w1.0", "top1", v, seed=seed) for seed, v in ((0, 70.0), (1, 71.0), (2, 72.0))]


def values(board, checkpoint_prefix="a-ckpt"):
    """{(subnet, column): mean} of one checkpoint's rows."""
    return {(r["subnet"], c): r[c].mean for r in board.rows if r["checkpoint"].startswith(checkpoint_prefix)
            for c in board.value_columns if c in r}


def test_build_picks_latest_finished_and_sizes():
    board = build(ROWS)
    # cx224 covers one checkpoint, complexity two: complexity fills params/macs, cx224 is a column of its own
    assert board.metric_columns == ["cx224/macs", "knn/top1"]
    a = [r for r in board.rows if r["checkpoint"].startswith("a-ckpt")]
    assert [r["subnet"] for r in a] == ["w1.0", "w0.5"]
    assert values(board) == {("w1.0", "knn/top1"): 70.0, ("w0.5", "knn/top1"): 55.0, ("w1.0", "params"): 11.2e6,
                             ("w1.0", "macs"): 0.56e9, ("w0.5", "params"): 2.8e6, ("w0.5", "macs"): 0.14e9}
    assert a[0]["knn/top1"].n == 1 and a[0]["knn/top1"].std is None
    assert a[0]["method"] == "slimclr-mocov2" and a[0]["widths"] == "1.0/0.5"
    assert values(board, "b-ckpt") == {("w0.5", "knn/top1"): 30.0, ("w0.5", "macs"): 0.14e9,
                                       ("w0.5", "cx224/macs"): 9e9}
    assert build(ROWS, suites=["complexity"]).metric_columns == []
    assert build(ROWS) == build(list(reversed(ROWS)))  # a pure function of the rows, not of their order


def test_markdown_and_csv():
    board = build(ROWS)
    md = to_markdown(board).splitlines()
    assert md[0] == "| checkpoint | method | widths | subnet | params | macs | cx224/macs | knn/top1 |"
    assert md[2] == "| a-ckpt@aaaaaaaa | slimclr-mocov2 | 1.0/0.5 | w1.0 | 11.20M | 0.560G |  | 70.00 |"
    parsed = list(csv.DictReader(io.StringIO(to_csv(board))))
    assert len(parsed) == 3 and parsed[1]["subnet"] == "w0.5" and float(parsed[1]["knn/top1"]) == 55.0
    assert float(parsed[0]["macs"]) == 0.56e9 and parsed[2]["params"] == ""
    assert "knn/top1_std" not in parsed[0]  # one seed per cell: the plain layout


def test_seeds_give_mean_std_and_n_in_every_format():
    later_seed1 = row("s1b", "knn", "w1.0", "top1", 73.0, seed=1, ended="2026-01-05T00:00:00")
    board = build(SEEDS + [later_seed1] + ROWS[5:7])
    cell = board.rows[0]["knn/top1"]
    # seed 1's later run replaced its earlier one; the cell is seeds 0, 1, 2
    assert [(m.seed, m.value) for m in cell.measurements] == [(0, 70.0), (1, 73.0), (2, 72.0)]
    assert cell.n == 3 and cell.mean == pytest.approx(71.6667, abs=1e-4)
    assert cell.std == pytest.approx(1.5275, abs=1e-4)
    assert to_markdown(board).splitlines()[2].endswith("| 71.67 ± 1.53 (3) |")
    wide = list(csv.DictReader(io.StringIO(to_csv(board))))[0]
    assert float(wide["knn/top1"]) == pytest.approx(71.6667, abs=1e-4)
    assert float(wide["knn/top1_std"]) == pytest.approx(1.5275, abs=1e-4) and wide["knn/top1_n"] == "3"
    assert "params_std" not in wide  # only columns whose cells have several seeds grow the extra fields
    long = list(csv.DictReader(io.StringIO(to_long_csv(board))))
    assert [(r["column"], r["seed"], float(r["value"]), r["run_id"]) for r in long if r["column"] == "knn/top1"] == [
        ("knn/top1", "0", 70.0, "s0"), ("knn/top1", "1", 73.0, "s1b"), ("knn/top1", "2", 72.0, "s2")]
    assert {r["column"] for r in long} == {"knn/top1", "params", "macs"}
    page = _Table()
    page.feed(to_html(board))
    assert "71.67 ± 1.53 (3)" in page.texts and "seed 0: 70.00; seed 1: 73.00; seed 2: 72.00" in page.titles
    assert plot_png(board).startswith(b"\x89PNG")  # error bars drawn from the same cells


def test_overrides_and_devices_are_distinct_columns():
    rows = [
        row("d", "knn", "w1.0", "top1", 70.0, params={"k": 20}),
        row("k200", "knn", "w1.0", "top1", 65.0, params={"k": 200}, variant={"params.k": 200, "dataset.limit": 5},
            ended="2026-01-02T00:00:00"),
        row("cpu", "latency", "w1.0", "latency_ms", 6.0, device="cpu", info={"device_name": "cpu"}),
        row("gpu", "latency", "w1.0", "latency_ms", 0.4, device="cuda", info={"device_name": "NVIDIA T4"},
            ended="2026-01-02T00:00:00"),
    ]
    board = build(rows)
    assert board.metric_columns == ["knn/top1", "knn[dataset.limit=5,k=200]/top1", "latency@cpu/latency_ms",
                                    "latency@cuda:NVIDIA T4/latency_ms"]
    assert values(board) == {("w1.0", "knn/top1"): 70.0, ("w1.0", "knn[dataset.limit=5,k=200]/top1"): 65.0,
                             ("w1.0", "latency@cpu/latency_ms"): 6.0,
                             ("w1.0", "latency@cuda:NVIDIA T4/latency_ms"): 0.4}


def test_runs_whose_batchnorm_saw_fewer_images_than_published_get_their_own_marked_column():
    four_gpus = {"bn_batch": 16, "bn_batch_published": 16, "bn_batch_note": None}
    one = {"bn_batch": 4, "bn_batch_published": 16, "bn_batch_note": "BatchNorm normalizes 4 images together here"}
    rows = [row("multi", "voc-seg", "w1.0", "mIoU", 70.0, protocol="mmseg", info=four_gpus),
            row("single", "voc-seg", "w0.5", "mIoU", 60.0, protocol="mmseg", info=one),
            row("semi", "semi", "w1.0", "top1", 50.0, info={"bn_batch": 256, "bn_batch_published": None})]
    board = build(rows)
    assert sorted(board.metric_columns) == ["semi/top1", "voc-seg(BN 4 of 16)/mIoU", "voc-seg/mIoU"]
    assert values(board) == {("w1.0", "voc-seg/mIoU"): 70.0, ("w0.5", "voc-seg(BN 4 of 16)/mIoU"): 60.0,
                             ("w1.0", "semi/top1"): 50.0}


def test_a_later_run_of_something_else_hides_nothing():
    rows = [row("all", "knn", "w1.0", "top1", 70.0), row("all", "knn", "w0.5", "top1", 60.0),
            # a later run of the same config on w0.5 only: it replaces w0.5's cell and leaves w1.0's
            row("half", "knn", "w0.5", "top1", 61.0, ended="2026-01-02T00:00:00"),
            # the suite file was edited (k 20 -> 30) between runs: two configs under one name
            row("edited", "knn", "w1.0", "top1", 75.0, params={"k": 30}, ended="2026-01-03T00:00:00")]
    board = build(rows)
    old = f"knn#{config_digest({'protocol': 'knn', 'dataset': {}, 'params': {}})[:6]}/top1"
    assert board.metric_columns == [old, "knn/top1"]   # the most recent config keeps the plain name
    assert values(board) == {("w1.0", old): 70.0, ("w0.5", old): 61.0, ("w1.0", "knn/top1"): 75.0}


class _Table(HTMLParser):
    def __init__(self):
        super().__init__()
        self.headers, self.cells, self.texts, self.titles, self.images, self.scripts = [], [], [], [], [], 0
        self._in = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("th", "td"):
            self._in = tag
            if tag == "td":
                self.cells.append(attrs["data-v"])
                self.titles.append(attrs.get("title"))
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        if self._in == "th":
            self.headers.append(data)
        elif self._in == "td":
            self.texts.append(data)

    def handle_endtag(self, tag):
        self._in = None


def test_html_is_self_contained_with_plot():
    text, png = render(build(ROWS), "html")
    assert png.startswith(b"\x89PNG")
    page = _Table()
    page.feed(text)
    assert page.headers == ["checkpoint", "method", "widths", "subnet", "params", "macs", "cx224/macs", "knn/top1"]
    assert len(page.cells) == 3 * 8 and "70.0" in page.cells
    assert page.images and page.images[0].startswith("data:image/png;base64,") and page.scripts == 1
    assert "http" not in text.replace("data:image", "")  # nothing fetched from elsewhere


def test_no_plot_without_sizes():
    board = build([r for r in ROWS if r["protocol"] != "complexity"])
    text, png = render(board, "html")
    assert png is None and "No plot" in text and to_html(board).count("<tr>") == 1 + 3


def test_run_folder_checkpoints_are_labelled_by_their_folder():
    from benchmarks.report import checkpoint_label

    assert checkpoint_label({"checkpoint_path": "/r/pretrain/demo-dspnet/checkpoint.pt",
                             "checkpoint_digest": "f4b44cb0aa"}) == "demo-dspnet@f4b44cb0"
    assert checkpoint_label({"checkpoint_path": "/r/r50.pt", "checkpoint_digest": "0123456789"}) == "r50@01234567"
