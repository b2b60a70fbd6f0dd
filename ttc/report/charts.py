"""The report's overview charts, drawn by matplotlib as inline SVG (text kept as text: small, searchable,
and no image files beside the page)."""
from __future__ import annotations

import io
from typing import Any, Sequence

KIND_LABELS = {"generated_tokens": "generated", "prompt_tokens": "prompt (not cached)",
               "cached_prompt_tokens": "prompt (from cache)", "verifier_tokens": "verifier", "lost_tokens": "lost"}


def _figure(width: float = 6.4, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height))


def _svg(plt, fig) -> str:
    buf = io.StringIO()
    fig.tight_layout()
    with plt.rc_context({"svg.fonttype": "none"}):  # this file's charts only, not the process's other plots
        fig.savefig(buf, format="svg", bbox_inches="tight")  # legends below the axes included
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # the XML prolog and doctype do not belong inside HTML


def accuracy_curves(configs: Sequence[dict[str, Any]], x: str, xlabel: str) -> str | None:
    """Accuracy against mean cost per problem, one line per strategy with its 90% bootstrap band."""
    series: dict[str, list[tuple[float, float, float, float]]] = {}
    for c in configs:
        cost = c["mean"].get(x) or 0
        if c["accuracy"] is None or cost <= 0:
            continue
        series.setdefault(c["strategy"], []).append((cost, c["accuracy"], c["low"], c["high"]))
    if not series:
        return None
    plt, fig, ax = _figure(6.4, 3.6 + 0.2 * len(series))
    for name, points in series.items():
        points.sort()
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], marker="o", label=name)
        ax.fill_between(xs, [p[2] for p in points], [p[3] for p in points], alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (90% bootstrap band)")
    ax.grid(alpha=0.3, which="both")
    # Below the axes: strategy labels with their options are long, and would hide the lines.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    return _svg(plt, fig)


def coverage_chart(scaling: dict[str, Any]) -> str | None:
    """coverage@k and majority@k of each strategy's largest run, with the fitted power law of coverage."""
    import numpy as np

    if not scaling:
        return None
    plt, fig, ax = _figure(6.4, 3.6 + 0.4 * len(scaling))
    for strategy, sc in scaling.items():
        ks = [r["k"] for r in sc["curves"]["coverage"]]
        line, = ax.plot(ks, [r["value"] for r in sc["curves"]["coverage"]], marker="o", label=f"{strategy}: coverage@k")
        ax.plot(ks, [r["value"] for r in sc["curves"]["majority"]], marker="s", linestyle=":", color=line.get_color(),
                label=f"{strategy}: majority@k")
        fit = sc.get("coverage_power_law") or {}
        if "a" in fit:
            grid = np.geomspace(ks[0], ks[-1], 50)
            ax.plot(grid, np.exp(fit["a"] * grid ** fit["b"]), linestyle="--", color=line.get_color(), alpha=0.6,
                    label=f"fit exp({fit['a']:.2f}·k^{fit['b']:.2f}), R²={fit['r2']:.2f}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples k")
    ax.set_ylabel("fraction of problems")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    return _svg(plt, fig)


def token_kinds(configs: Sequence[dict[str, Any]]) -> str | None:
    """Mean tokens per problem by kind, one stacked bar per configuration."""
    if not configs:
        return None
    plt, fig, ax = _figure(6.4, 1.4 + 0.32 * len(configs))
    labels = [c["config"] for c in configs]
    left = [0.0] * len(configs)
    for kind, name in KIND_LABELS.items():
        if kind == "prompt_tokens":  # cached prompt tokens are a part of the prompt tokens: drawn apart
            values = [max(0.0, c["mean"]["prompt_tokens"] - c["mean"]["cached_prompt_tokens"]) for c in configs]
        else:
            values = [c["mean"][kind] for c in configs]
        if not any(values):
            continue
        ax.barh(labels, values, left=left, label=name)
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel("tokens per problem (mean)")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False, ncol=3)
    return _svg(plt, fig)


def allocator_chart(allocator: dict[str, Any] | None) -> str | None:
    """auto's choices by difficulty bin, stacked."""
    if not allocator:
        return None
    plt, fig, ax = _figure(6.4, 3.2)
    bottom = [0] * len(allocator["bins"])
    for choice in allocator["choices"]:
        values = [allocator["counts"][b].get(choice, 0) for b in allocator["bins"]]
        ax.bar(allocator["bins"], values, bottom=bottom, label=choice)
        bottom = [a + b for a, b in zip(bottom, values)]
    ax.set_ylabel("problems")
    ax.set_xlabel("difficulty bin (predicted from the probe)")
    ax.legend(fontsize=7)
    return _svg(plt, fig)


def overview_charts(data: dict[str, Any]) -> dict[str, str]:
    """Every chart the run's data supports, by name; a chart without data is left out."""
    charts = {
        "accuracy_tokens": accuracy_curves(data["configs"], "generated_tokens", "generated tokens per problem (mean)"),
        "accuracy_flops": accuracy_curves(data["configs"], "flops", "FLOPs per problem (mean, estimated)"),
        "coverage": coverage_chart(data["scaling"]),
        "token_kinds": token_kinds(data["configs"]),
        "allocator": allocator_chart(data["allocator"]),
    }
    return {name: svg for name, svg in charts.items() if svg}
