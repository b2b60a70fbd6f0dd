"""Which frozen-feature probe carries within-problem signal: a sweep on the recorded label files.

The shipped probe (`ttc train-verifier`, defaults) reads the hidden state at each step tag of
layer 22 and fits soft J targets. On the held-out problems it reached within-problem AUROC 0.65,
below mean_logprob's 0.68. This bench extracts, in one pass per sample, the hidden states of
several layers at two places — the final step tag, and the mean over the final step's tokens
(where the answer is) — for the calibration, tuning and held-out samples of bench.verifier, and
fits outcome probes (is this sample's answer right) on the calibration samples, plain and
**problem-centred** (each problem's mean feature subtracted before fitting, so the probe can only
learn what tells one problem's candidates apart, not which problems are easy). Each variant is
judged on the held-out problems exactly as bench.verifier judges a scorer (within-problem AUROC,
the combined rule with g fitted on the tuning problems, bootstrap interval, outvoted recovered).

    python -m bench.verifier_variants [--out bench/out/verifier]   # after bench.verifier made the label files
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.provenance import provenance

LAYERS = (16, 22)  # the model is cut after the last; its entry is the final-normed state, as the shipped probe reads


def extract(model, input_builder, records, batch_size: int = 16):
    """Per sample: {layer: (tag feature, final-step mean feature)}; and (record index, sample index) rows."""
    import torch

    from ttc.evaluation.labeling import problem_of, trajectories_of

    items = []
    for ri, r in enumerate(records):
        problem = problem_of(r)
        for si, t in enumerate(trajectories_of(r)):
            steps = t.steps or [""]
            ids, positions = input_builder.encode(problem.prompt, steps)
            before_last = input_builder.encode(problem.prompt, steps[:-1])[0] if len(steps) > 1 else \
                input_builder.encode(problem.prompt, [])[0]
            start = len(before_last)
            end = positions[-1] - len(input_builder.tag_ids) + 1  # the final step's own tokens
            items.append((ids[:1024], min(positions[-1], 1023), start, max(start + 1, min(end, 1024)), ri, si))
    order = sorted(range(len(items)), key=lambda k: len(items[k][0]))
    feats = {layer: [None] * len(items) for layer in LAYERS}
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            batch = [items[k] for k in order[b:b + batch_size]]
            width = max(len(x[0]) for x in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, x in enumerate(batch):
                ids[r, :len(x[0])] = torch.tensor(x[0])
                mask[r, :len(x[0])] = 1
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
            for layer in LAYERS:
                hidden = out.hidden_states[layer]
                for r, x in enumerate(batch):
                    tag = hidden[r, x[1]].float()
                    span = hidden[r, x[2]:x[3]].float().mean(0)
                    feats[layer][order[b + r]] = (tag.numpy(), span.numpy())
    rows = [(x[4], x[5]) for x in items]
    return feats, rows


def fit_logistic(x, y, l2: float, iterations: int = 200):
    import torch

    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)
    w = torch.zeros(x.shape[1] + 1, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=iterations, line_search_fn="strong_wolfe")
    xb = torch.cat([x, torch.ones(len(x), 1)], 1)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xb @ w, y) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy()


def centred(x, groups):
    out = x.copy()
    for g in set(groups):
        idx = [i for i, k in enumerate(groups) if k == g]
        out[idx] -= x[idx].mean(0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/verifier")
    parser.add_argument("--limit", type=int, default=None, help="first N problems of each set (a quick look)")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttc.default_model import ensure_default_model
    from ttc.evaluation.labeling import read_labels
    from ttc.evaluation.verifier_eval import metrics
    from verifiers.step_input import StepInput

    torch.manual_seed(0)
    out = Path(args.out)
    base = str(ensure_default_model(log=print))
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    model.model.layers = model.model.layers[:max(LAYERS)]  # nothing above the deepest layer read is computed
    model.config.num_hidden_layers = max(LAYERS)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:max(LAYERS)]
    builder = StepInput(tokenizer, "\n\n", "{problem}\n\n")
    sets = {"calibration": read_labels(out / "labels.jsonl"), "tuning": read_labels(out / "tuning" / "labels.jsonl"),
            "heldout": read_labels(out / "heldout_deduped.jsonl")}
    sets = {name: records[:args.limit] for name, records in sets.items()}
    started = time.perf_counter()
    data = {name: extract(model, builder, records) for name, records in sets.items()}
    extract_s = time.perf_counter() - started
    print(f"features of {sum(len(d[1]) for d in data.values())} samples in {extract_s:.0f} s", flush=True)

    def matrix(name, layer, where):
        feats, rows = data[name]
        x = np.stack([f[where] for f in feats[layer]])
        y = np.array([bool(sets[name][ri]["samples"][si]["correct"]) for ri, si in rows], dtype=np.float32)
        groups = [ri for ri, _ in rows]
        return x, y, groups, rows

    def scores_for(name, w, layer, where):
        x, _, _, rows = matrix(name, layer, where)
        logits = x @ w[:-1] + w[-1]
        probs = 1.0 / (1.0 + np.exp(-logits))
        per = [[[0.0] for _ in r["samples"]] for r in sets[name]]
        for (ri, si), p in zip(rows, probs):
            per[ri][si] = [float(p)]
        return per

    results = []
    for layer in LAYERS:
        for where, where_name in ((0, "final tag"), (1, "final step mean")):
            x, y, groups, _ = matrix("calibration", layer, where)
            mu, sd = x.mean(0), x.std(0) + 1e-6
            for centring in (False, True):
                xs = (x - mu) / sd
                xs = centred(xs, groups) if centring else xs
                for l2 in (1e-3, 1e-2):
                    w = fit_logistic(xs, y, l2)
                    w_raw = np.concatenate([w[:-1] / sd, [w[-1] - (w[:-1] * mu / sd).sum()]])  # back to raw features
                    held = scores_for("heldout", w_raw, layer, where)
                    tune = scores_for("tuning", w_raw, layer, where)
                    from ttc.evaluation.verifier_eval import candidates_of

                    m = metrics(sets["heldout"], held, candidates_of(sets["tuning"], tune, 16), 16)
                    c = m["rules"]["combined"]
                    row = {"layer": layer, "where": where_name, "centred": centring, "l2": l2,
                           "within_problem_auroc": m["within_problem_auroc"], "outcome_auroc": m["outcome_auroc"],
                           "g": m["verifier_weight"], "gain": c["gain_points"], "ci_low": c["ci_low"],
                           "ci_high": c.get("ci_high"), "recovered": c["share"], "wins": c["wins"], "losses": c["losses"],
                           "weighted_gain": m["rules"]["weighted"]["gain_points"]}
                    results.append(row)
                    print(json.dumps(row), flush=True)
    best = max(results, key=lambda r: (r["within_problem_auroc"] or 0))
    print(json.dumps({"bench": "verifier_variants", "extract_seconds": round(extract_s, 1), "best_by_within_auroc": best,
                      "best_by_gain": max(results, key=lambda r: r["gain"] or -99), "variants": len(results),
                      **provenance()}))


if __name__ == "__main__":
    main()
