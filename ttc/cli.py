"""The `ttc` command line.

Usage errors (bad options, budgets, prompts) exit with code 2 and one clear
message, never a traceback; a backend failure exits with code 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from ttc.core.errors import BackendError, BudgetError, ConfigError, SolveError, TTCError
from ttc.engine_config import DEFAULT_STRATEGY

USAGE_ERRORS = (ConfigError, BudgetError)


def _quiet_backends() -> None:
    # vLLM logs to stdout at INFO by default, which would corrupt --json output.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("TQDM_DISABLE", "1")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: exit 2 without a traceback
        self.print_usage(sys.stderr)
        print(f"ttc: error: {message}", file=sys.stderr)
        raise SystemExit(2)


#: `ttc calibrate`'s flags: the `ttc.calibrate.CalibrationConfig` field each sets, its type and metavar.
CALIBRATE_FLAGS = (("--probe-samples", "probe_samples", int, "N"), ("--bins", "n_bins", int, "N"),
                   ("--folds", "folds", int, "K"), ("--price", "price_per_1k_tokens", float, "P"),
                   ("--stop-margin", "stop_margin", int, "M"), ("--name", "name", str, "NAME"))


def _calibration_arguments(c: argparse.ArgumentParser) -> None:
    """The calibrate flags, with their defaults and help from CalibrationConfig's fields (one source)."""
    from ttc.calibrate import CalibrationConfig

    fields = CalibrationConfig.model_fields
    c.add_argument("--evaluate", action="store_true", default=fields["evaluate"].default,
                   help=fields["evaluate"].description)
    for flag, name, kind, metavar in CALIBRATE_FLAGS:
        info = fields[name]
        text = info.description if info.default is None else f"{info.description} (default: {info.default})"
        c.add_argument(flag, dest=name, type=kind, default=info.default, metavar=metavar, help=text)


def _calibration_config(args):
    """The validated CalibrationConfig of the parsed flags; a bad value is a ConfigError naming its flag."""
    from ttc.calibrate import CalibrationConfig
    from ttc.core.config import validate

    names = {name: flag for flag, name, _, _ in CALIBRATE_FLAGS}
    try:
        return validate(CalibrationConfig, {name: getattr(args, name) for name in [*names, "evaluate"]})
    except ConfigError as exc:
        problems = []
        for problem in exc.problems:
            name, sep, rest = problem.partition(":")
            problems.append(f"{names[name]} ({name}):{rest}" if sep and name in names else problem)
        raise ConfigError(problems) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ttc", description="Test-time compute orchestration.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="show the backends' own messages (vLLM, torch); by default they go to a log file")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("solve", parents=[common], help="answer one prompt under a compute budget")
    s.add_argument("prompt", help="the problem text")
    s.add_argument("--budget", required=True, type=int, help="generated-token budget (an int)")
    s.add_argument("--strategy", default=DEFAULT_STRATEGY, help=f"strategy name (default: {DEFAULT_STRATEGY})")
    s.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="strategy option, repeatable (e.g. --set n=8 --set selection=majority)")
    s.add_argument("--reference", help="reference answer, to report correctness and coverage")
    s.add_argument("--backend", default=None, help="generator backend: vllm (default), openai, fake")
    s.add_argument("--model", default=None, help="checkpoint folder or model name (default: embedded SmolLM2-135M)")
    s.add_argument("--base-url", default=None, help="OpenAI-compatible server URL, with --backend openai")
    s.add_argument("--backend-set", dest="backend_sets", action="append", default=[], metavar="KEY=VALUE",
                   help="backend option, repeatable (e.g. --backend-set max_model_len=4096)")
    s.add_argument("--verifier", default=None, help="scorer name, e.g. mean_logprob, oracle")
    s.add_argument("--seed", type=int, default=None, help="seed of the strategy's randomness")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--trace", metavar="PATH", help="write the search trace (tree, scores, kept nodes) as JSON")
    s.add_argument("--report", metavar="PATH", help="write an HTML page of the solve: candidates, votes, search tree")

    r = sub.add_parser("run", parents=[common], help="run a YAML recipe over a dataset (resumes where it stopped)")
    r.add_argument("recipe", help="path of the recipe file")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. strategy.n=16")
    r.add_argument("--dry-run", action="store_true",
                   help="validate and run on the fake backend with 3 problems, into a temporary folder")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    rp = sub.add_parser("report", parents=[common],
                        help="write a run's HTML report (compute curves, problems table, each problem's search tree)")
    rp.add_argument("run_dir", help="output folder of a `ttc run`")
    rp.add_argument("--out", default=None, help="where to write it (default: RUN_DIR/report.html)")
    rp.add_argument("--max-details", type=int, default=None,
                    help="problems whose detail the page carries at most (default 400; sampled over configurations)")

    c = sub.add_parser("calibrate", parents=[common], help="run a strategy x budget grid, fit an allocator for strategy=auto")
    c.add_argument("recipe", help="recipe whose strategies x budgets form the grid, on a calibration dataset")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    _calibration_arguments(c)
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    lab = sub.add_parser("label", parents=[common],
                         help="sample the recipe's dataset and label every step by Monte-Carlo rollouts (resumable)")
    lab.add_argument("recipe", help="recipe whose generator, sampling, dataset and `label:` section are used")
    lab.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. label.continuations=8")
    lab.add_argument("--no-progress", action="store_true", help="no progress bar")

    sv = sub.add_parser("serve", parents=[common],
                        help="serve the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models) with "
                        "test-time compute behind it")
    sv.add_argument("recipe", nargs="?", default=None, help="recipe whose generator, verifier, sampling, strategy, "
                    "budget and serve: section are the server's; none: the embedded model, best_of_n, 1024 tokens")
    sv.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. serve.max_concurrent=32")
    sv.add_argument("--host", default=None, help="address to bind (default serve.host, 127.0.0.1)")
    sv.add_argument("--port", type=int, default=None, help="port (default serve.port, 8000)")
    sv.add_argument("--api-key", default=None, help="bearer token clients must send (default: $TTC_API_KEY); "
                    "required to bind a non-loopback address")

    ml = sub.add_parser("mrt-label", parents=[common],
                        help="sample thinking traces, split them into episodes and write MRT's per-episode J, progress, "
                        "regret and advantage (resumable)")
    ml.add_argument("recipe", help="recipe whose generator, sampling, dataset and `mrt_label:` section are used")
    ml.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. mrt_label.traces=8")
    ml.add_argument("--no-progress", action="store_true", help="no progress bar")

    vp = sub.add_parser("verifier-pipeline", parents=[common],
                        help="label a recipe's dataset, train a verifier on it and evaluate it on held-out problems")
    vp.add_argument("recipe", help="recipe with label:, train: and evaluate_verifier: sections")
    vp.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    vp.add_argument("--no-progress", action="store_true", help="no progress bar")

    tv = sub.add_parser("train-verifier", parents=[common],
                        help="train a process reward model on a label file (probe on a frozen model by default)")
    tv.add_argument("labels", help="label file written by `ttc label`")
    tv.add_argument("--base", default=None, help="base checkpoint folder (default: the embedded SmolLM2-135M)")
    tv.add_argument("--out", required=True,
                    help="output folder, or a bare name to put it in $TTC_HOME/verifiers/NAME (usable by name)")
    tv.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="training option, repeatable (e.g. --set method=lora --set layer=20)")

    ev = sub.add_parser("eval-verifier", parents=[common],
                        help="AUROCs and selection accuracy of a scorer on held-out labelled candidates")
    ev.add_argument("labels", help="held-out label file (`ttc label`, continuations may be 0)")
    ev.add_argument("--verifier", required=True, help="scorer name, e.g. prm_transformers, self_eval, mean_logprob")
    ev.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="scorer option, repeatable (e.g. --set model=my-verifier)")
    ev.add_argument("--tuning", default=None, help="label file of other problems (not the verifier's training "
                    "labels) on which the combined rule's weight g is fitted; without one g = 1")
    ev.add_argument("--samples", type=int, default=16, help="candidates per problem used for selection (default 16)")
    ev.add_argument("--model", default=None, help="policy checkpoint, for scorers that use it (default: embedded)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    cc = sub.add_parser("check-code", parents=[common],
                        help="judge a solution against HumanEval-format tests in the code sandbox")
    cc.add_argument("solution", help="Python file with the function under test")
    cc.add_argument("tests", help="Python file defining check(candidate), which asserts on calls of candidate")
    cc.add_argument("--entry-point", required=True, help="name of the tested function in SOLUTION")
    cc.add_argument("--timeout", type=float, default=None, help="wall-clock limit in seconds (default 3)")
    cc.add_argument("--isolation", choices=["auto", "namespaces", "rlimits"], default="auto",
                    help="namespaces (root on Linux), rlimits, or auto: namespaces when they work here")
    cc.add_argument("--json", action="store_true", help="print one JSON object")

    address_help = "Ray job server (dashboard) URL; default $RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265"
    j = sub.add_parser("submit", parents=[common], help="run a recipe as a Ray job on a cluster")
    j.add_argument("recipe", help="recipe YAML file")
    j.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, applied before submitting")
    j.add_argument("--address", default=None, help=address_help)
    j.add_argument("--wait", action="store_true", help="stream the job's logs and exit with its status")
    j.add_argument("--python", default=None,
                   help="interpreter on the cluster (default: this one for a loopback address, else `python`)")
    j.add_argument("--id", dest="submission_id", default=None, help="job id to use (default: Ray picks one)")

    jobs = sub.add_parser("jobs", parents=[common], help="status, logs, stop or list of Ray jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, parser_class=_Parser)
    for name, text in (("status", "a job's status"), ("logs", "a job's logs so far (--follow: until it ends)"),
                       ("stop", "stop a running job")):
        q = jobs_sub.add_parser(name, help=text)
        q.add_argument("job_id", help="the id `ttc submit` printed")
        q.add_argument("--address", default=None, help=address_help)
        if name == "logs":
            q.add_argument("--follow", action="store_true", help="stream until the job ends")
    q = jobs_sub.add_parser("list", parents=[common], help="every job the server knows")
    q.add_argument("--address", default=None, help=address_help)
    return parser


def cmd_submit(args) -> int:
    from ttc import jobs
    from ttc.core.config import parse_assignments
    from ttc.evaluation.recipe import load_recipe

    recipe = load_recipe(args.recipe, parse_assignments(args.overrides))  # invalid recipes never leave here
    address = args.address or jobs.default_address()
    job_id = jobs.submit(recipe, address=address, python=args.python, submission_id=args.submission_id)
    print(f"job: {job_id}")
    print(f"results: {recipe.output_dir().resolve() / 'results.jsonl'} (on the cluster)", flush=True)
    if not args.wait:
        print(f"follow it with: ttc jobs logs {job_id} --follow --address {address}")
        return 0
    state = jobs.follow(job_id, address=address)
    print(f"job {job_id}: {state}")
    return 0 if state == "SUCCEEDED" else 1


def cmd_jobs(args) -> int:
    from ttc import jobs

    address = args.address or jobs.default_address()
    if args.jobs_command == "status":
        info = jobs.status(args.job_id, address=address)
        print(f"{info['job_id']}: {info['status']}" + (f" ({info['message']})" if info["message"] else ""))
        return 0
    if args.jobs_command == "logs":
        if args.follow:
            state = jobs.follow(args.job_id, address=address)
            print(f"job {args.job_id}: {state}")
            return 0 if state == "SUCCEEDED" else 1
        sys.stdout.write(jobs.logs(args.job_id, address=address))
        return 0
    if args.jobs_command == "stop":
        print(f"{args.job_id}: {'stopping' if jobs.stop(args.job_id, address=address) else 'already ended'}")
        return 0
    for info in jobs.list_jobs(address=address):
        print(f"{info['job_id']}  {info['status']:<10} {info['recipe'] or ''}")
    return 0


def _engine_from_args(args):
    from ttc.core.config import parse_assignments
    from ttc.engine import Engine

    config: dict = {"backend_options": parse_assignments(args.backend_sets)}
    if args.backend:
        config["backend"] = args.backend
    if args.model:
        config["model"] = args.model
    if args.base_url:
        config["backend_options"]["base_url"] = args.base_url
    if args.verifier:
        config["verifier"] = args.verifier
    return Engine(config)


def cmd_solve(args) -> int:
    from ttc.core.config import parse_assignments

    options = parse_assignments(args.sets)
    engine = _engine_from_args(args)
    try:
        solution = engine.solve(args.prompt, args.budget, args.strategy, reference=args.reference,
                                seed=args.seed, **options)
    finally:
        engine.close()
    u = solution.usage
    if args.trace:
        with open(args.trace, "w") as fh:
            json.dump({**solution.to_dict(), "prompt": solution.problem.prompt, "trace": solution.trace}, fh,
                      indent=1, default=str)
    if args.json:
        print(json.dumps(solution.to_dict(with_candidates=False)))
    else:
        print(f"answer: {solution.answer}")
        if solution.correct is not None:
            print(f"correct: {solution.correct}")
        print(f"strategy: {solution.strategy} ({len(solution.candidates)} candidates)")
        print(f"tokens: {u.generated_tokens} generated, {u.prompt_tokens} prompt "
              f"({u.cached_prompt_tokens} cached), {u.verifier_tokens} verifier; ~{u.flops:.3g} FLOPs")
        print(f"time: {u.wall_s:.2f} s")
    if args.report:  # after the answer is out: a page that cannot be written loses nothing of the solve
        from ttc.report import write_solution_report

        print(f"report: {write_solution_report(solution, args.budget, args.seed, args.report).resolve()}",
              file=args.terminal)
    return 0


def dry_run_overrides(recipe, output: str) -> dict:
    """Run a recipe on the fakes: fake generator, fake scorer, 3 problems, a throwaway folder, one process."""
    out = {"generator.backend": "fake", "generator.model": None, "generator.options": {},
           "dataset.limit": 3, "output": output, "cluster": None}
    if recipe.verifier is not None:
        out.update({"verifier.name": "fake", "verifier.options": {}})
    return out


def cmd_run(args) -> int:
    import tempfile

    from ttc.core.config import parse_assignments
    from ttc.evaluation.recipe import load_recipe
    from ttc.evaluation.runner import run_recipe

    overrides = parse_assignments(args.overrides)
    if args.dry_run:
        recipe = load_recipe(args.recipe, overrides)  # the real recipe must be valid first
        overrides.update(dry_run_overrides(recipe, tempfile.mkdtemp(prefix="ttc-dry-run-")))
    recipe = load_recipe(args.recipe, overrides)
    summary = run_recipe(recipe, progress=False if args.no_progress else args.terminal)
    from ttc.evaluation.report import terminal_table

    out = recipe.output_dir()
    print(f"results: {out / 'results.jsonl'}")
    for line in terminal_table(summary["table"]):
        print(line)
    if summary.get("plots"):
        print(f"plots: {', '.join(str(out / p) for p in summary['plots'])}")
    if summary.get("report"):
        print(f"report: {summary['report']}  (open it in a browser: curves, every problem, each search tree)")
    elif summary.get("report_error"):
        print(f"report: not written ({summary['report_error']}); `ttc report {out}` tries again")
    if recipe.generator.model is None and recipe.generator.backend == "vllm":
        print("note: the default model is SmolLM2-135M-Instruct, a 135M-parameter toy chosen to run anywhere "
              "(2 CPU cores); its accuracy says how the strategies compare, not what a real model reaches. "
              "Set generator.model to use your own.")
    return 0


def cmd_report(args) -> int:
    from ttc.report import write_run_report

    if args.max_details is not None and args.max_details < 0:
        raise ConfigError(f"--max-details must be 0 or more, got {args.max_details}")
    options = {} if args.max_details is None else {"max_details": args.max_details}
    print(f"report: {write_run_report(args.run_dir, args.out, **options).resolve()}")
    return 0


def cmd_label(args) -> int:
    from ttc.core.config import parse_assignments
    from ttc.evaluation.labeling import label_recipe
    from ttc.evaluation.recipe import load_recipe

    recipe = load_recipe(args.recipe, parse_assignments(args.overrides))
    s = label_recipe(recipe, progress=False if args.no_progress else args.terminal)
    print(f"labels: {s['path']} ({s['problems']} problems, {s['samples']} samples; {s['labelled_now']} labelled now)")
    print(f"  sample accuracy {s['sample_accuracy']}; intermediate steps labelled {s['intermediate_steps_labelled']}, "
          f"positive share {s['positive_step_share']}, mean J {s['mean_j']}")
    print(f"  tokens: {s['sample_tokens']} in samples, {s['continuation_tokens']} in continuations, "
          f"{s['prompt_tokens']} prompt ({s['cached_prompt_tokens']} from cache); {s['wall_s']} s")
    for e in s["errors"][:5]:
        print(f"  failed: {e}")
    return 1 if s["errors"] else 0


def cmd_mrt_label(args) -> int:
    from ttc.core.config import parse_assignments
    from ttc.evaluation.mrt_labeling import mrt_label_recipe
    from ttc.evaluation.recipe import load_recipe

    recipe = load_recipe(args.recipe, parse_assignments(args.overrides))
    s = mrt_label_recipe(recipe, progress=False if args.no_progress else args.terminal)
    print(f"MRT labels: {s['path']} ({s['problems']} problems, {s['traces']} traces, {s['episodes']} episodes; "
          f"{s['labelled_now']} labelled now)")
    print(f"  trace accuracy {s['trace_accuracy']}; J before thinking {s['mean_j0']}, after it {s['mean_j_end']}; "
          f"episodes with positive progress {s['positive_progress_share']}")
    print(f"  tokens: {s['thinking_tokens']} thinking, {s['generated_tokens']} generated in all; {s['wall_s']} s")
    if s.get("plot"):
        print(f"  plot: {s['plot']}")
    for e in s["errors"][:5]:
        print(f"  failed: {e}")
    return 1 if s["errors"] else 0


def cmd_verifier_pipeline(args) -> int:
    from ttc.core.config import parse_assignments
    from ttc.evaluation.recipe import load_recipe
    from ttc.evaluation.verifier_pipeline import run_pipeline

    recipe = load_recipe(args.recipe, parse_assignments(args.overrides))
    run_pipeline(recipe, progress=False if args.no_progress else args.terminal, log=lambda m: print(m, flush=True))
    print(f"figures: {recipe.output_dir() / 'verifier_eval.json'}; verifier: {recipe.output_dir() / 'verifier'}")
    return 0


def cmd_train_verifier(args) -> int:
    from ttc.core.config import parse_assignments, validate
    from ttc.verifier_training import TrainConfig, train_verifier
    from verifiers.trained import verifiers_dir

    options = parse_assignments(args.sets)
    if args.base is not None:
        options["base"] = args.base
    config = validate(TrainConfig, options)
    out = verifiers_dir() / args.out if "/" not in args.out and args.out not in (".", "..") else args.out
    info = train_verifier(args.labels, out, config, log=lambda m: print(m, file=args.terminal, flush=True))
    print(f"verifier: {out}  (use: --verifier prm_transformers --set model={args.out})")
    print(f"  validation: {info['validation']}; {info['train_seconds']} s")
    return 0


def cmd_eval_verifier(args) -> int:
    from ttc.core.config import parse_assignments, validate
    from ttc.engine import Engine
    from ttc.engine_config import EngineConfig
    from ttc.evaluation.verifier_eval import evaluate_verifier, table

    if args.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {args.samples}")
    config = validate(EngineConfig, {"model": args.model, "verifier": args.verifier,
                                     "verifier_options": parse_assignments(args.sets)})
    with Engine(config) as engine:
        m = evaluate_verifier(engine, args.labels, tuning_path=args.tuning, samples=args.samples)
    print(json.dumps(m) if args.json else table(args.verifier, m))
    return 0


def cmd_serve(args) -> int:
    from ttc.core.config import parse_assignments
    from ttc.serve.config import load_serve_config
    from ttc.serve.server import resolve_api_key, serve

    overrides = parse_assignments(args.overrides)
    if args.host is not None:
        overrides["serve.host"] = args.host
    if args.port is not None:
        overrides["serve.port"] = args.port
    config = load_serve_config(args.recipe, overrides)
    resolve_api_key(config, args.api_key)  # refuse an open non-loopback bind before the model loads
    print(f"ttc serve: http://{config.serve.host}:{config.serve.port}/v1 (strategy {config.default_strategy.name}, "
          f"budget {config.default_budget.to_dict()}); loading the model ...", file=args.terminal, flush=True)
    serve(config, api_key=args.api_key)
    return 0


def cmd_check_code(args) -> int:
    from ttc.core.config import validate
    from workers.sandbox import CodeJob, Sandbox, SandboxConfig

    texts = {}
    for label, path in (("SOLUTION", args.solution), ("TESTS", args.tests)):
        try:
            texts[label] = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{label} {path!r} cannot be read: {exc}") from None
    options = {"isolation": args.isolation, **({"timeout_s": args.timeout} if args.timeout is not None else {})}
    sandbox = Sandbox(validate(SandboxConfig, options, "check-code"))
    job = CodeJob(solution=texts["SOLUTION"], entry_point=args.entry_point, tests=texts["TESTS"])
    verdict = sandbox.check(job)  # the verdict is the output: exit 0 whatever it says
    if args.json:
        print(json.dumps(verdict.to_dict()))
    else:
        print(f"{verdict.status}: {verdict.tests_passed}/{verdict.tests_total} tests passed "
              f"in {verdict.seconds:.2f} s ({verdict.isolation} isolation)" + (f"; {verdict.message}" if verdict.message else ""))
        if verdict.output:
            print("output" + (" (cut)" if verdict.output_truncated else "") + ":\n" + verdict.output)
    return 0


def cmd_calibrate(args) -> int:
    from ttc.calibrate import calibrate
    from ttc.core.config import parse_assignments
    from ttc.evaluation.recipe import load_recipe

    config = _calibration_config(args)  # bad values are refused before anything is read or run
    recipe = load_recipe(args.recipe, parse_assignments(args.overrides))
    report = calibrate(recipe, config, progress=False if args.no_progress else args.terminal)
    print(f"allocator: {report['allocator'][-1]} (also {report['allocator'][0]})")
    print(f"  difficulty bins on predicted pass@1, edges {[round(e, 3) for e in report['edges']]}; "
          f"cross-fitted: price_per_1k_tokens={report['price_per_1k_tokens']}, stop_margin={report['stop_margin']}")
    for i, b in enumerate(report["bins"]):
        print(f"  bin {i} ({b['problems']} problems): best per budget {b['best']}")
    ev = report.get("evaluation")
    if ev:
        for name in ("auto", "best_fixed", "best_of_n_majority"):
            curve = ev[name] if name == "auto" else ev.get(name, {}).get("curve", [])
            pts = ", ".join(f"{p['accuracy']:.1%}@{p['tokens']:.0f}tok" for p in curve)
            print(f"  {name:<20} {pts}")
        if "compute_ratio" in ev:
            print(f"  compute_ratio (auto tokens / best-of-N tokens at best-of-N's top accuracy): {ev['compute_ratio']}")
    return 0


COMMANDS = {"solve": "cmd_solve", "run": "cmd_run", "report": "cmd_report", "calibrate": "cmd_calibrate", "submit": "cmd_submit",
            "jobs": "cmd_jobs", "label": "cmd_label", "mrt-label": "cmd_mrt_label", "serve": "cmd_serve", "train-verifier": "cmd_train_verifier",
            "verifier-pipeline": "cmd_verifier_pipeline",
            "eval-verifier": "cmd_eval_verifier", "check-code": "cmd_check_code"}


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments; recipe overrides (KEY=VALUE) may also come after the flags."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = getattr(args, "overrides", None)
    if extra:
        if overrides is None or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    _quiet_backends()
    from ttc.console import backend_log, backends_to_log

    with backends_to_log(args.verbose) as terminal:
        args.terminal = terminal  # the command line's own messages and progress bar
        try:
            return globals()[COMMANDS[args.command]](args)
        except USAGE_ERRORS as exc:
            print(f"ttc: error: {exc}", file=terminal)
            return 2
        except SolveError as exc:
            kept = len(exc.partial.candidates) if exc.partial else 0
            print(f"ttc: error: {exc} ({kept} finished candidates kept)", file=terminal)
        except (BackendError, TTCError) as exc:
            print(f"ttc: error: {exc}", file=terminal)
        except KeyboardInterrupt:
            print("ttc: interrupted; finished results are kept, rerun the same command to resume", file=terminal)
            return 130
        if not args.verbose:
            print(f"ttc: the backends' own messages are in {backend_log()} (--verbose shows them)", file=terminal)
        return 1


if __name__ == "__main__":
    sys.exit(main())
