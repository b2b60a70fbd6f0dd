"""Fill the page template with a run's (or one problem's) data and write one self-contained file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ttc.core.paths import write_whole
from ttc.report.charts import overview_charts
from ttc.report.data import MAX_DETAILS, ReportError, run_data, solve_data


def write_page(path: Path, text: str, option: str) -> Path:
    """The page written whole; a folder that cannot take it is an error naming the option and the path."""
    try:
        return write_whole(path, text)
    except OSError as exc:
        raise ReportError(f"{option}={str(path)!r} cannot be written: {exc.strerror or exc}") from None


def page_json(data: dict[str, Any]) -> str:
    """The data as JSON safe inside a <script> element: no "</" can close it early, and no "<!--"
    can open a comment (the page's own strings reach the browser unchanged)."""
    from ttc.evaluation.report import json_safe

    # NaN and infinite scores (a replayed scorer, an empty step) are written as null: JSON has neither.
    text = json.dumps(json_safe(data), default=str, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(data: dict[str, Any], charts: dict[str, str]) -> str:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(loader=jinja2.PackageLoader("ttc.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    template = env.get_template("report.html.j2")
    return template.render(data=data, data_json=Markup(page_json(data)),
                           charts={name: Markup(svg) for name, svg in charts.items()})


def write_run_report(run_dir: str | Path, out: str | Path | None = None, *, max_details: int = MAX_DETAILS) -> Path:
    """report.html for the run in `run_dir` (by default inside it); returns its path."""
    data = run_data(run_dir, max_details=max_details)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    return write_page(path, render(data, overview_charts(data)), "out")


def write_problem_report(record: dict[str, Any], out: str | Path) -> Path:
    """The detail page of one solved problem, from its results-style record."""
    return write_page(Path(out), render(solve_data(record), {}), "report")


def write_solution_report(solution, budget, seed: int | None, out: str | Path) -> Path:
    """The detail page of one `ttc solve`: its Solution as the results line a run would have written."""
    from ttc.evaluation.results import solution_record

    record = solution_record(solution, config=f"{solution.strategy}@{budget}", strategy=solution.strategy,
                             budget={"generated_tokens": budget}, seed=seed, settings="", problem=solution.problem)
    return write_problem_report(record, out)
