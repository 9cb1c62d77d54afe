"""The leaderboard from known rows: latest finished run per suite, sizes from complexity, md/csv/html output."""
import csv
import io
import json
from html.parser import HTMLParser

from benchmarks.leaderboard import build, render, to_csv, to_html, to_markdown


def row(run_id, suite, subnet, metric, value, status="finished", ended="2026-01-01T00:00:01", ckpt="a",
        protocol=None):
    return {"run_id": run_id, "suite": suite, "suite_digest": "s", "protocol": protocol or suite,
            "checkpoint_digest": ckpt * 64, "checkpoint_path": f"/c/{ckpt}-ckpt.pt", "checkpoint_method":
            "slimclr-mocov2" if ckpt == "a" else "random", "checkpoint_widths": json.dumps([1.0, 0.5]),
            "subnet": subnet, "metric": metric, "value": value, "code_version": "t", "host": "h", "device": "cpu",
            "started_at": "2026-01-01T00:00:00", "ended_at": None if status == "running" else ended, "status": status}


ROWS = [
    row("r1", "knn", "w1.0", "top1", 60.0, ended="2026-01-01T00:00:01"),
    row("r2", "knn", "w1.0", "top1", 70.0, ended="2026-01-02T00:00:00"),   # later: wins
    row("r2", "knn", "w0.5", "top1", 55.0, ended="2026-01-02T00:00:00"),
    row("r3", "knn", "w1.0", "top1", 99.0, status="failed"),
    row("r4", "knn", "w1.0", "top1", 98.0, status="running"),
    row("r5", "complexity", "w1.0", "params", 11.2e6),
    row("r5", "complexity", "w1.0", "macs", 0.56e9),
    row("r5", "complexity", "w0.5", "params", 2.8e6),
    row("r5", "complexity", "w0.5", "macs", 0.14e9),
    row("r6", "knn", "w0.5", "top1", 30.0, ckpt="b"),
    row("r7", "cx224", "w0.5", "macs", 9e9, ckpt="b", protocol="complexity"),
]


def test_build_picks_latest_finished_and_sizes():
    board = build(ROWS)
    assert board.metric_columns == ["knn/top1"]
    a = [r for r in board.rows if r["checkpoint"].startswith("a-ckpt")]
    assert [r["subnet"] for r in a] == ["w1.0", "w0.5"]
    assert a[0]["knn/top1"] == 70.0 and a[1]["knn/top1"] == 55.0
    assert a[0]["params"] == 11.2e6 and a[1]["macs"] == 0.14e9
    assert a[0]["method"] == "slimclr-mocov2" and a[0]["widths"] == "1.0/0.5"
    b = [r for r in board.rows if r["checkpoint"].startswith("b-ckpt")]
    assert b == [{"checkpoint": "b-ckpt@bbbbbbbb", "method": "random", "widths": "1.0/0.5", "subnet": "w0.5",
                  "knn/top1": 30.0, "macs": 9e9}]
    assert build(ROWS, suites=["complexity"]).metric_columns == []
    assert build(ROWS) == build(list(reversed(ROWS)))  # a pure function of the rows, not of their order


def test_markdown_and_csv():
    board = build(ROWS)
    md = to_markdown(board).splitlines()
    assert md[0] == "| checkpoint | method | widths | subnet | params | macs | knn/top1 |"
    assert md[2] == "| a-ckpt@aaaaaaaa | slimclr-mocov2 | 1.0/0.5 | w1.0 | 11.20M | 0.560G | 70.00 |"
    parsed = list(csv.DictReader(io.StringIO(to_csv(board))))
    assert len(parsed) == 3 and parsed[1]["subnet"] == "w0.5" and float(parsed[1]["knn/top1"]) == 55.0
    assert float(parsed[0]["macs"]) == 0.56e9 and parsed[2]["params"] == ""


class _Table(HTMLParser):
    def __init__(self):
        super().__init__()
        self.headers, self.cells, self.images, self.scripts, self._in = [], [], [], 0, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("th", "td"):
            self._in = tag
            if tag == "td":
                self.cells.append(attrs["data-v"])
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        if self._in == "th":
            self.headers.append(data)

    def handle_endtag(self, tag):
        self._in = None


def test_html_is_self_contained_with_plot():
    text, png = render(build(ROWS), "html")
    assert png.startswith(b"\x89PNG")
    page = _Table()
    page.feed(text)
    assert page.headers == ["checkpoint", "method", "widths", "subnet", "params", "macs", "knn/top1"]
    assert len(page.cells) == 3 * 7 and "70.0" in page.cells
    assert page.images and page.images[0].startswith("data:image/png;base64,") and page.scripts == 1
    assert "http" not in text.replace("data:image", "")  # nothing fetched from elsewhere


def test_no_plot_without_sizes():
    board = build([r for r in ROWS if r["protocol"] != "complexity"])
    text, png = render(board, "html")
    assert png is None and "No plot" in text and to_html(board).count("<tr>") == 1 + 3


def test_run_folder_checkpoints_are_labelled_by_their_folder():
    from benchmarks.leaderboard import checkpoint_label

    assert checkpoint_label({"checkpoint_path": "/r/pretrain/demo-dspnet/checkpoint.pt",
                             "checkpoint_digest": "f4b44cb0aa"}) == "demo-dspnet@f4b44cb0"
    assert checkpoint_label({"checkpoint_path": "/r/r50.pt", "checkpoint_digest": "0123456789"}) == "r50@01234567"
