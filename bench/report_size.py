"""Does the run report stay small and usable for a large run? A run of many problems on the fakes
(best-of-N majority and beam search at two budgets), then its report: file size, time to write it,
and in headless Chromium (offline) the time until the problems table is drawn, and the time to sort
it and to filter it.

    python -m bench.report_size [--problems 2500]
    python -m bench.report_size --run runs/some_run        # an existing run folder (real texts) instead

Its last line is one JSON object: problems, results, report_mb, write_s, load_ms, sort_ms, filter_ms.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.provenance import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=2500)
    parser.add_argument("--run", default=None, help="measure the report of this run folder instead of a fake run")
    args = parser.parse_args()
    from ttc.evaluation.recipe import parse_recipe
    from ttc.evaluation.runner import run_recipe

    if args.run:
        measure(Path(args.run), None)
        return
    folder = Path(tempfile.mkdtemp(prefix="ttc-report-size-"))
    data = folder / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"Question {i}? " * 8, "answer": str(40 + i % 4),
                                        "level": f"l{i % 4}"}) + "\n" for i in range(args.problems)))
    recipe = parse_recipe({
        "name": "report_size", "generator": {"backend": "fake"}, "verifier": {"name": "fake"},
        "dataset": {"source": str(data)}, "sampling": {"max_tokens": 64},
        "strategy": [{"name": "best_of_n", "label": "majority"},
                     {"name": "beam_search", "n": 4, "beam_width": 2, "max_step_tokens": 24, "max_steps": 3}],
        "budget": [256, 1024], "output": str(folder / "run"), "max_concurrent_problems": 256,
    })
    run_recipe(recipe, progress=False, make_plots=False)
    measure(folder / "run", args.problems)


def measure(run: Path, problems: int | None) -> None:
    from ttc.report import write_run_report
    from ttc.report.browser import offline_browser, open_file, page_errors

    t0 = time.perf_counter()
    report = write_run_report(run, Path(tempfile.mkdtemp(prefix="ttc-report-size-")) / "report.html")
    write_s = time.perf_counter() - t0
    results = sum(1 for _ in open(run / "results.jsonl"))
    with offline_browser() as driver:
        t0 = time.perf_counter()
        open_file(driver, report)  # returns after the load event: the script has drawn the table by then
        driver.execute_script("showTab('problems')")
        rows = len(driver.find_elements("css selector", "#problems-table tbody tr"))
        load_ms = (time.perf_counter() - t0) * 1000
        sort_ms = driver.execute_script("""const t = performance.now();
            document.querySelector('#problems-table th[data-key=tokens]').click(); return performance.now() - t;""")
        filter_ms = driver.execute_script("""const t = performance.now(); const e = document.getElementById('filter-correct');
            e.value = 'no'; e.dispatchEvent(new Event('input', {bubbles: true})); return performance.now() - t;""")
        errors = page_errors(driver)
    line = {"bench": "report_size", "run": str(run), "problems": problems, "results": results,
            "report_mb": round(report.stat().st_size / 1e6, 2), "results_mb": round(
                (run / "results.jsonl").stat().st_size / 1e6, 1), "write_s": round(write_s, 2),
            "load_ms": round(load_ms), "rows_drawn": rows, "sort_ms": round(sort_ms), "filter_ms": round(filter_ms),
            "page_errors": errors, **provenance()}
    print(f"{results} results: report.html {line['report_mb']} MB "
          f"(results.jsonl {line['results_mb']} MB), written in {line['write_s']} s; in Chromium: table drawn "
          f"{line['load_ms']} ms after opening, sorted in {line['sort_ms']} ms, filtered in {line['filter_ms']} ms")
    print(json.dumps(line))


if __name__ == "__main__":
    main()
