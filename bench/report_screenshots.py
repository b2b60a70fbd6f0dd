"""Screenshots of a run report's three views, for the README, taken in headless Chromium offline.

    python -m bench.report_screenshots runs/quickstart runs/step_search_cpu [--out bench/figures]

For each run folder: its report.html is written again (`ttc report`), then the overview, the problems
table and the detail of one problem are captured as report_<view>_<run name>.png. The detail opened is
the step search with the largest tree that fits the window, when the run has one, so a tree shows.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ttc.report import write_run_report
from ttc.report.browser import offline_browser, open_file, page_errors


def capture(run: Path, out: Path) -> list[Path]:
    report = write_run_report(run)
    name = run.name
    shots = []
    with offline_browser(1400, 1100) as driver:
        open_file(driver, report)
        data = json.loads(driver.execute_script("return document.getElementById('report-data').textContent"))
        for view in ("overview", "problems"):
            driver.execute_script(f"showTab('{view}')")
            shots.append(out / f"report_{view}_{name}.png")
            driver.save_screenshot(str(shots[-1]))
        # The largest tree that still fits the window (40 nodes at most), else the first result.
        trees = [(len(d["tree"]["nodes"]), -i) for i, d in enumerate(data["details"])
                 if d["tree"] and len(d["tree"]["nodes"]) <= 40]
        index = -max(trees)[1] if trees else 0
        driver.execute_script(f"openDetail({index}); showTab('detail');")
        time.sleep(0.2)
        path = driver.execute_script("return [...document.querySelectorAll('#tree g.node.on-path circle')].length")
        if path:  # show a node's text as a reader would, by clicking the chosen answer's last node
            driver.execute_script("const c = [...document.querySelectorAll('#tree g.node.on-path')].pop();"
                                  "c.dispatchEvent(new MouseEvent('click', {bubbles: true}));")
        shots.append(out / f"report_detail_{name}.png")
        driver.save_screenshot(str(shots[-1]))
        errors = page_errors(driver)
        if errors:
            raise SystemExit(f"{report}: the page logged errors: {errors}")
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run output folders")
    parser.add_argument("--out", default="bench/figures")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        for shot in capture(Path(run), out):
            print(shot)


if __name__ == "__main__":
    main()
