"""The report in a real browser: headless Chromium (Debian's, installed by the test set-up when missing)
opens a fake run's report.html from disk with the network off; the charts render, the table sorts and
filters, a problem opens with its tree, and the page raises no JavaScript error. Screenshots go to
test-artifacts/ at the repository root."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ttc.report.browser import BrowserUnavailable, ensure_chromium, offline_browser, open_file, page_errors

from report_run import make_run

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    try:
        ensure_chromium()
    except BrowserUnavailable as exc:
        if os.geteuid() == 0 or os.environ.get("CI"):
            raise  # as root (CI) the set-up can install it: a missing browser is a failure, not a skip
        pytest.skip(f"no browser for the report tests: {exc}")
    with offline_browser() as driver:
        yield driver


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("browser")) / "report.html"


def css(driver, selector):
    return driver.find_elements("css selector", selector)


def shot(driver, name):
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def page_data(driver):
    return json.loads(driver.execute_script("return document.getElementById('report-data').textContent"))


def visible_column(driver, index):
    return [row.find_elements("css selector", "td")[index].text for row in css(driver, "#problems-table tbody tr")]


def wait_for(condition, timeout=5.0):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("the page did not get there in time")
        time.sleep(0.05)


def test_overview_charts_render_offline_without_errors(browser, report):
    open_file(browser, report)
    figures = css(browser, "figure.chart")
    assert {f.get_attribute("data-chart") for f in figures} >= {"accuracy_tokens", "accuracy_flops", "coverage",
                                                                "token_kinds"}
    for f in figures:
        svg = f.find_element("css selector", "svg")
        assert svg.size["width"] > 200 and svg.size["height"] > 100  # laid out, not empty
        assert len(f.find_elements("css selector", "path")) > 5  # axes, lines, bands drawn
    assert len(css(browser, "#configs tbody tr")) == 6
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    shot(browser, "report_overview.png")
    assert page_errors(browser) == []


def test_problems_table_sorts_and_filters(browser, report):
    open_file(browser, report)
    css(browser, "nav button[data-tab=problems]")[0].click()
    assert len(css(browser, "#problems-table tbody tr")) == 36
    tokens_header = css(browser, "#problems-table th[data-key=tokens]")[0]
    tokens_header.click()
    ascending = [int(x) for x in visible_column(browser, 6)]
    assert ascending == sorted(ascending) and ascending[0] < ascending[-1]
    tokens_header.click()
    assert [int(x) for x in visible_column(browser, 6)] == sorted(ascending, reverse=True)
    data = page_data(browser)
    # Filter: wrong answers at the hard level only.
    browser.execute_script("""
        const set = (id, v) => { const e = document.getElementById(id); e.value = v;
                                 e.dispatchEvent(new Event('input', {bubbles: true})); };
        set('filter-correct', 'no'); set('filter-level', 'hard');""")
    expected = [r for r in data["rows"] if r["correct"] is False and r["level"] == "hard"]
    assert 0 < len(expected) < 36
    assert len(css(browser, "#problems-table tbody tr")) == len(expected)
    assert set(visible_column(browser, 3)) == {"no"} and set(visible_column(browser, 2)) == {"hard"}
    assert css(browser, "#row-count")[0].text == f"{len(expected)} of 36 rows"
    shot(browser, "report_problems.png")
    assert page_errors(browser) == []


def test_opening_a_problem_draws_its_tree_with_the_chosen_path(browser, report):
    open_file(browser, report)
    data = page_data(browser)
    css(browser, "nav button[data-tab=problems]")[0].click()
    browser.execute_script("""const e = document.getElementById('filter-config');
        e.value = [...e.options].find(o => o.text.startsWith('beam_search')).text;
        e.dispatchEvent(new Event('input', {bubbles: true}));""")
    row = css(browser, "#problems-table tbody tr")[0]
    detail = data["details"][data["rows"][int(row.get_attribute("data-row"))]["detail"]]
    row.click()
    wait_for(lambda: css(browser, "#tree svg g.node"))
    assert css(browser, "section#detail")[0].is_displayed()
    nodes = css(browser, "#tree svg g.node")
    assert len(nodes) == len(detail["tree"]["nodes"]) == 12
    on_path = css(browser, "#tree svg g.node.on-path")
    assert [int(n.get_attribute("data-id")) for n in on_path] == detail["tree"]["chosen_path"]
    assert len(css(browser, "#tree svg line.on-path")) == len(detail["tree"]["chosen_path"]) - 1
    assert len(css(browser, "#candidates tbody tr.chosen")) == 1
    # Clicking a node shows its text.
    last = on_path[-1]
    last.find_element("css selector", "circle").click()
    text = css(browser, "#node-text")[0].text
    node = next(n for n in detail["tree"]["nodes"] if n["id"] == detail["tree"]["chosen_path"][-1])
    assert "on the chosen path" in text and node["text"].strip()[:20] in text
    shot(browser, "report_problem_tree.png")
    assert page_errors(browser) == []


def test_best_of_n_detail_lists_candidates_and_votes_without_a_tree(browser, report):
    open_file(browser, report)
    data = page_data(browser)
    index = next(r["detail"] for r in data["rows"] if r["config"].startswith("majority"))
    browser.execute_script(f"openDetail({index}); showTab('detail');")
    detail = data["details"][index]
    assert not css(browser, "#tree-box")[0].is_displayed()
    assert len(css(browser, "#candidates tbody tr")) == len(detail["candidates"]) > 1
    assert len(css(browser, "#votes tbody tr")) == len(detail["votes"]) > 0
    assert page_errors(browser) == []


def test_the_solve_page_opens_on_its_problem(browser, tmp_path):
    from ttc import cli

    out = tmp_path / "solve.html"
    assert cli.main(["solve", "What is 6 * 7?", "--backend", "fake", "--verifier", "fake", "--budget", "512",
                     "--strategy", "particle_filtering", "--set", "n=4", "--set", "max_step_tokens=16",
                     "--report", str(out)]) == 0
    open_file(browser, out)
    data = page_data(browser)
    assert css(browser, "section#detail")[0].is_displayed() and not css(browser, "section#overview")
    assert len(css(browser, "#tree svg g.node")) == len(data["details"][0]["tree"]["nodes"]) > 0
    assert len(css(browser, "#tree svg g.node.on-path")) == len(data["details"][0]["tree"]["chosen_path"])
    shot(browser, "report_solve.png")
    assert page_errors(browser) == []
