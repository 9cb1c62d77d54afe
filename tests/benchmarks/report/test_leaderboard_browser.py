"""The HTML leaderboard as a person sees it: rendered by headless Chromium, clicked, read back."""
import shutil
from pathlib import Path

import pytest

from benchmarks.report import build, plot_png, to_html
from tests.benchmarks.report.test_pairing import rows

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="no Debian chromium (`make setup` installs it as root: apt-get install chromium)")
# As the machine notes advise: no first-run, sync or background fetches on a closed network.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    board = build(rows())
    path = tmp_path_factory.mktemp("board") / "leaderboard.html"
    path.write_text(to_html(board, plot_png(board)))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        tab = browser.new_page()
        tab.goto(path.as_uri())
        yield tab
        browser.close()


def column(page, header: str):
    """The text of the leaderboard cells under ``header``, top to bottom, as rendered."""
    index = page.locator("#leaderboard thead th").all_inner_texts().index(header)
    return page.eval_on_selector_all("#leaderboard tbody tr", f"rows => rows.map(r => r.cells[{index}].innerText)")


def test_the_table_and_the_plot_are_rendered(page):
    assert page.locator("#leaderboard tbody tr").count() == 6
    assert page.locator("#comparison tbody tr").count() == 2
    plot = page.locator("img[alt='top-1 vs MACs']")
    assert plot.count() == 1 and plot.evaluate("img => img.complete && img.naturalWidth > 100")


def test_clicking_a_header_sorts_the_rows(page):
    header = page.locator("#leaderboard thead th", has_text="fmnist-knn/top1")
    header.click()
    ascending = [float(v) for v in column(page, "fmnist-knn/top1")]
    assert ascending == sorted(ascending) and len(ascending) == 6
    header.click()
    assert [float(v) for v in column(page, "fmnist-knn/top1")] == sorted(ascending, reverse=True)


def test_only_headline_metrics_show_until_asked(page):
    extra = page.locator("#leaderboard thead th", has_text="fmnist-knn/top5")
    assert not extra.is_visible() and page.locator("#leaderboard thead th", has_text="fmnist-knn/top1").is_visible()
    page.check("#all-metrics")
    assert extra.is_visible()
