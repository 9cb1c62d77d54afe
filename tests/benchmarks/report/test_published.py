"""Published results: the shipped tables load and cite their sources; bad files fail with one clear error;
the leaderboard shows them as reference rows beside their suite only, in every format, and hides them
with ``--published none``."""
import csv
import io
import re

import pytest
import yaml

from benchmarks.cli import main
from benchmarks.report import build, plot_png, to_csv, to_html, to_long_csv, to_markdown, to_terminal
from benchmarks.report.published import PUBLISHED_DIR, PublishedError, load_published, plot_points
from benchmarks.results.store import ResultsStore
from tests.benchmarks.report.test_leaderboard import row
from tests.benchmarks.report.test_pairing import rows as paired_rows


def test_every_shipped_entry_loads_and_cites_the_file_and_line_it_was_read_from():
    entries = load_published()
    assert len(entries) >= 30 and {p.suite for p in entries} >= {"imagenet-linear", "voc-det", "imagenet-stored-probe"}
    for p in entries:
        assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+/blob/[0-9a-f]{40}/\S+#L\d+", p.address), p.address
        assert p.citation.endswith(p.address.rsplit("#L", 1)[1])
    moco = {(p.label, p.metric): p.value for p in entries if p.path.endswith("moco.yaml")}
    assert moco[("MoCo v2 R50 800ep", "top1")] == 71.1 and moco[("MoCo v2 R50 200ep", "box_AP")] == 57.0
    zoo = {p.subnet: p.value for p in entries if p.label == "supervised S-ResNet-50"}
    assert zoo == {"w1.0": 76.0, "w0.75": pytest.approx(74.9), "w0.5": pytest.approx(72.1), "w0.25": 65.0}


def write(tmp_path, entries, source=None):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"source": source or {"paper": "SlimCLR (IJCV 2024)", "table": "Table 2",
                                                         "read_from": "https://arxiv.org/abs/2209.15525"},
                                    "entries": entries}))
    return path


ENTRY = {"label": "SlimCLR-MoCov2 R50 200ep", "method": "slimclr-mocov2", "arch": "resnet50", "subnet": "w0.5",
         "suite": "imagenet-linear-slimclr-mocov2", "metric": "top1", "value": 60.0}


@pytest.mark.parametrize("change,message", [
    ({"suite": "imagenet-linaer"}, r"entry 1 \(SlimCLR-MoCov2 R50 200ep\): suite 'imagenet-linaer' is not a suite"),
    ({"value": None}, r"missing|give exactly one of 'value'"),
    ({"error": 40.0}, r"give exactly one of 'value' \(as published\) or 'error'"),
    ({"value": "sixty"}, r"value must be a number, found 'sixty'"),
    ({"subnet": "half"}, r"subnet 'half'"),
    ({"colour": "red"}, r"unknown key\(s\) \['colour'\]"),
    ({"read_from": "my notes"}, r"'read_from' must be the address the value was read from"),
])
def test_a_bad_entry_names_its_file_entry_and_key(tmp_path, change, message):
    entry = {k: v for k, v in {**ENTRY, **change}.items() if v is not None}
    with pytest.raises(PublishedError, match=message):
        load_published(write(tmp_path, [entry]))


def test_a_source_needs_file_and_line_or_paper_and_table(tmp_path):
    with pytest.raises(PublishedError, match="no source: give repository, file and line, or paper and table"):
        load_published(write(tmp_path, [ENTRY], {"repository": "x/y", "read_from": "https://github.com/x/y/blob/c/"}))
    with pytest.raises(PublishedError, match="'line' must be a positive line number"):
        load_published(write(tmp_path, [ENTRY], {"repository": "x/y", "file": "README.md", "line": 0,
                                                 "read_from": "https://github.com/x/y/blob/c/"}))
    (tmp_path / "empty.yaml").write_text("entries: []\n")
    with pytest.raises(PublishedError, match="non-empty 'entries' list"):
        load_published(tmp_path / "empty.yaml")


def test_a_users_paper_table_is_read_with_its_address(tmp_path):
    [p] = load_published(write(tmp_path, [ENTRY]))
    assert p.citation == "SlimCLR (IJCV 2024), Table 2" and p.address == "https://arxiv.org/abs/2209.15525"


def user_rows():
    """One user checkpoint (a) run on imagenet-linear (MoCo's protocol) and imagenet-knn, with complexity."""
    out = [row("l", "imagenet-linear", "w1.0", "top1", 64.2, protocol="linear"),
           row("l", "imagenet-linear", "w1.0", "wall_time_s", 100.0, protocol="linear"),
           row("l", "imagenet-linear", "w0.5", "top1", 55.0, protocol="linear"),
           row("k", "imagenet-knn", "w1.0", "top1", 40.0, protocol="knn"),
           row("c", "complexity", "w1.0", "macs", 4.1e9), row("c", "complexity", "w0.5", "macs", 1.1e9)]
    return out


def test_reference_rows_sit_beside_their_suite_in_every_format():
    board = build(user_rows(), published=load_published())
    labels = [r["checkpoint"] for r in board.published]
    assert any(l.startswith("published: MoCo v2 R50 800ep [") for l in labels)
    columns = {c for r in board.published for c in r if "/" in c}
    assert columns == {"imagenet-linear/top1"}   # not voc-det (no column), not imagenet-knn (lightly's k=200)
    md = to_markdown(board)
    assert re.search(r"\| published: MoCo v2 R50 800ep \[\d+\] \| mocov2 \| resnet50 \| w1.0 \|.*\| 71.10 \|", md)
    assert "facebookresearch/moco README.md line 128 (https://github.com/facebookresearch/moco/blob/" in md
    parsed = list(csv.DictReader(io.StringIO(to_csv(board))))
    ref = [r for r in parsed if r["checkpoint"].startswith("published: MoCo v2 R50 800ep")][0]
    assert float(ref["imagenet-linear/top1"]) == 71.1 and "README.md#L128" in ref["published_source"]
    assert [r for r in parsed if r["checkpoint"].startswith("a-ckpt")][0]["published_source"] == ""
    assert "published:https://github.com/facebookresearch/moco/blob/" in to_long_csv(board)
    page = to_html(board)
    assert page.count('<tr class="published"') == len(board.published) and 'id="published-sources"' in page
    terminal = to_terminal(board)
    assert "published: MoCo v2 R50 800ep [" in terminal and "facebookresearch/moco README.md line 128" in terminal
    assert (4.1, 71.1) in [(x, y) for x, y, _ in plot_points(board, "imagenet-linear/top1")]
    assert plot_png(board)[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_entry_with_overrides_sits_only_beside_that_variant():
    knn = [row("k2", "imagenet-knn", "w1.0", "top1", 41.0, protocol="knn",
               variant={"params.k": 200, "params.temperature": 0.1})]
    board = build(user_rows() + knn, published=load_published())
    lightly = [r for r in board.published if "lightly" in r["checkpoint"]]
    assert {c for r in lightly for c in r if "/" in c} == {"imagenet-knn[k=200,temperature=0.1]/top1"}


def test_no_published_rows_without_a_column_of_their_suite():
    board = build([row("r", "fmnist-knn", "w1.0", "top1", 80.0, protocol="knn")], published=load_published())
    assert board.published == [] and "published" not in to_markdown(board)


def test_the_comparison_shows_results_only():
    timed = [{**r, "run_id": r["run_id"] + "t", "metric": "wall_time_s", "value": 5.0} for r in paired_rows()
             if r["metric"] == "top1"]
    board = build(paired_rows() + timed)
    assert "fmnist-knn/wall_time_s" in board.metric_columns
    assert board.comparison.metric_columns == ["fmnist-knn/top1", "fmnist-knn/top5"]
    assert "wall_time_s" not in to_html(board).split('id="comparison"', 1)[1]


def test_bench_leaderboard_published_flag(tmp_path, capsys):
    store = ResultsStore(tmp_path / "results.db")
    for suite, protocol, results in (("imagenet-linear", "linear", [("w1.0", "top1", 64.2)]),
                                     ("complexity", "complexity", [("w1.0", "macs", 4.1e9)])):
        run = store.start_run(suite=suite, suite_digest=suite, suite_json={"name": suite, "protocol": protocol},
                              protocol=protocol, checkpoint_digest="a" * 64, checkpoint_path="/c/mine.pt",
                              checkpoint_method="import:moco", checkpoint_widths=[1.0], code_version="t", device="cpu")
        store.add_results(run, results)
        store.finish_run(run)
    db = str(tmp_path / "results.db")
    assert main(["leaderboard", "--db", db, "--columns", "all"]) == 0
    shown = capsys.readouterr().out
    assert "| published: MoCo v2 R50 800ep [" in shown and "| mine@aaaaaaaa | import:moco |" in shown
    assert main(["leaderboard", "--db", db, "--columns", "all", "--published", "none"]) == 0
    assert "published" not in capsys.readouterr().out
    mine = write(tmp_path, [{**ENTRY, "suite": "imagenet-linear", "subnet": "w1.0", "value": 66.6}])
    assert main(["leaderboard", "--db", db, "--published", str(mine)]) == 0
    out = capsys.readouterr().out
    assert "published: SlimCLR-MoCov2 R50 200ep [1]" in out and "66.60" in out and "MoCo v2" not in out
    assert main(["leaderboard", "--db", db, "--published", str(tmp_path / "nowhere.yaml")]) != 0
    assert "nowhere.yaml: no such file or folder" in capsys.readouterr().err
