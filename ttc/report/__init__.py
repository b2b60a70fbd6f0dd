"""The run report: one self-contained HTML file (`ttc report RUN_DIR`, written at the end of `ttc run`).

data.py and problem.py compute what it shows from the run folder; charts.py draws the overview as
inline SVG with matplotlib; render.py fills the Jinja2 template (templates/), whose inline script
draws the problems table and each problem's search tree. No network: everything is in the file.
"""
from ttc.report.render import write_problem_report, write_run_report, write_solution_report

__all__ = ["write_problem_report", "write_run_report", "write_solution_report"]
