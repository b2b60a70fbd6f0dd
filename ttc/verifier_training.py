"""`ttc train-verifier`: a process reward model from a label file, on CPU for small models.

The verifier scores every step: its input is the one `prm_transformers` builds (problem,
then each step followed by a step tag) and its score at a tag is P(good) = sigmoid(l_good -
l_bad), the logits of two tokens of its LM head. Targets are the label file's J (soft) or
its hard labels; steps whose J is unknown are left out. Problems, not samples, are split
into training and validation, so validation never sees a problem it trained on.

Three methods:

- `probe` (default; the cheap strong choice on CPU): the base model cut after `layer`
  layers, frozen, and a linear read-out of its final (normed) hidden state at each tag,
  fitted by L-BFGS on cross-entropy with an L2 penalty chosen on validation loss. The
  read-out is written into the LM-head rows of the good and bad tokens (w/2 and -w/2), so
  the result is an ordinary causal-LM checkpoint that both PRM scorers load. The head has
  no bias, so the read-out has none either (Llama heads have none).
- `full`: every weight trained (AdamW), epochs with early stopping on validation loss.
- `lora`: low-rank adapters on the attention projections (peft) over the probe's fixed
  read-out; merged into the weights before saving.

The output folder holds the checkpoint, its tokenizer, `ttc_verifier.json` (scoring
format, data, settings, validation metrics) and a model card (README.md).
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from pydantic import Field

from ttc.core.config import StrictModel
from ttc.core.errors import ConfigError, VerifierError
from ttc.evaluation.labeling import problem_of, read_labels, trajectories_of
from ttc.evaluation.verifier_metrics import auroc
from verifiers.trained import FORMAT_FILE


class TrainConfig(StrictModel):
    """Options of `ttc train-verifier`."""

    base: str | None = Field(None, description="Base checkpoint folder or local model name; None = the embedded model.")
    method: Literal["probe", "full", "lora"] = Field("probe", description="What is trained (see the module doc).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the model runs; auto = cuda when "
                                                   "available. The probe's read-out is always fitted on the CPU.")
    layer: int | None = Field(
        None, ge=1, description="Layers of the base kept (probe: read after this layer; full/lora: the model is cut "
        "here too); None = 3/4 of them, rounded (22 of SmolLM2-135M's 30), or all for full/lora.")
    targets: Literal["soft", "hard"] = Field("soft", description="Fit J itself (soft) or the hard labels.")
    validation_share: float = Field(0.2, gt=0.0, lt=1.0, description="Share of problems held out for validation.")
    seed: int = Field(0, ge=0, description="Seed of the split and of training.")
    l2: list[float] = Field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1], min_length=1,
                            description="probe: L2 penalties tried; the one with the lowest validation loss is kept.")
    max_iterations: int = Field(200, ge=1, le=100_000, description="probe: L-BFGS iterations at most.")
    epochs: int = Field(3, ge=1, le=1000, description="full/lora: passes over the training steps at most.")
    learning_rate: float = Field(2e-5, gt=0.0, le=1.0, description="full/lora: AdamW learning rate.")
    batch_size: int = Field(16, ge=1, le=4096, description="Trajectories per forward pass.")
    lora_rank: int = Field(8, ge=1, le=1024, description="lora: adapter rank.")
    max_length: int = Field(1024, ge=16, le=1_048_576, description="Longest scored input in tokens; longer samples "
                            "are left out (and counted).")
    step_tag: str = Field("\n\n", min_length=1, description="Text after each step; the score is read at its last token.")
    good_token: str = Field("+", min_length=1, description="Token whose logit stands for a good step (one token).")
    bad_token: str = Field("-", min_length=1, description="Token whose logit stands for a bad step (one token).")
    prompt_template: str = Field("{problem}\n\n", description="How the problem precedes the steps.")
    centre_by_problem: bool = Field(
        False, description="probe: fit on features with each problem's mean subtracted, so the read-out learns what "
        "separates one problem's candidates (the ranking selection reads) rather than which problems are easy; "
        "bench.verifier_variants measured +0.01 to +0.04 within-problem AUROC with it.")


def file_sha256(path: Path) -> str:
    """The label file's content hash: a verifier records what it was trained on."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- examples ---------------------------------------------------------------------------------

def examples(records: Sequence[dict[str, Any]], targets: str) -> list[tuple[int, Any, list, list[float | None]]]:
    """(problem index, problem, trajectory, per-step target or None) for every sample with a target."""
    out = []
    for i, r in enumerate(records):
        problem = problem_of(r)
        for t, s in zip(trajectories_of(r), r["samples"]):
            values = s["j"] if targets == "soft" else s["labels"]
            if t.steps and any(v is not None for v in values):
                out.append((i, problem, t, [None if v is None else float(v) for v in values]))
    return out


def split_problems(n: int, share: float, seed: int) -> tuple[set[int], set[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = max(1, round(n * share)) if n > 1 else 0
    return set(order[k:]), set(order[:k])


# ---- the model --------------------------------------------------------------------------------

def pick_device(choice: str):
    import torch

    cuda = torch.cuda.is_available()
    if choice == "cuda" and not cuda:
        raise ConfigError("train-verifier: device='cuda', but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and cuda) else "cpu")


def load_base(base: str, layer: int | None, method: str):
    """The base causal LM in float32, cut after `layer` layers, with an untied LM head."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, local_files_only=True)
    except Exception as exc:
        raise ConfigError(f"train-verifier: cannot load base model {base!r}: {type(exc).__name__}: {exc}") from None
    layers = model.get_decoder().layers
    total = len(layers)
    keep = layer if layer is not None else (max(1, round(total * 0.75)) if method == "probe" else total)
    if keep > total:
        raise ConfigError(f"train-verifier: layer={keep} but base model {base!r} has {total} layers")
    if keep < total:
        model.get_decoder().layers = layers[:keep]
        model.config.num_hidden_layers = keep
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:keep]
    # The head is untied from the input embeddings, so changing the good/bad rows changes no input.
    head = model.get_output_embeddings()
    untied = torch.nn.Linear(head.weight.shape[1], head.weight.shape[0], bias=False)
    untied.weight.data.copy_(head.weight.data)
    model.set_output_embeddings(untied)
    model.config.tie_word_embeddings = False
    if hasattr(model, "_tied_weights_keys"):
        model._tied_weights_keys = []
    return model, keep, total


def _batches(items: list, size: int):
    items = sorted(items, key=lambda e: len(e[0]))
    for k in range(0, len(items), size):
        yield items[k:k + size]


def _pad(batch, pad_id: int, device):
    import torch

    width = max(len(ids) for ids, *_ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (ids, *_rest) in enumerate(batch):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        mask[r, :len(ids)] = 1
    return input_ids.to(device), mask.to(device)


def hidden_at_tags(model, encoded: list, pad_id: int, batch_size: int):
    """Final (normed) hidden states at every scored tag, on the CPU: (features [N, d], row of each)."""
    import torch

    feats, rows = [], []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in _batches(encoded, batch_size):
            input_ids, mask = _pad(batch, pad_id, device)
            hidden = model.get_decoder()(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
            for r, (_ids, positions, row) in enumerate(batch):
                feats.append(hidden[r, positions].float().cpu())
                rows.append((row, len(positions)))
    return feats, rows


# ---- fitting ----------------------------------------------------------------------------------

def problem_of_rows(encoded_part, items) -> list[int]:
    """The problem of each feature row (one row per scored tag, in `features` order)."""
    return [items[e[3]][0] for e in encoded_part for _ in e[1]]


def centre_rows(x, groups: Sequence[int]):
    """Rows minus the mean row of their group (problem)."""
    import torch

    ids = torch.tensor(groups)
    _, inverse = torch.unique(ids, return_inverse=True)
    sums = torch.zeros(int(inverse.max()) + 1 if len(groups) else 0, x.shape[1]).index_add_(0, inverse, x)
    counts = torch.bincount(inverse).clamp_min(1).unsqueeze(1).to(x.dtype)
    return x - (sums / counts)[inverse]


def fit_probe(x_train, y_train, x_val, y_val, l2s: Sequence[float], iterations: int, log: Callable[[str], None]):
    """A bias-free logistic read-out by L-BFGS for each L2 penalty; the lowest validation loss wins."""
    import torch

    scale = x_train.pow(2).mean().sqrt().clamp_min(1e-6)  # a well-conditioned problem; undone on return
    xt, xv = x_train / scale, x_val / scale
    best = None
    for l2 in l2s:
        w = torch.zeros(xt.shape[1], requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=iterations, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w, y_train) + l2 * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            val = torch.nn.functional.binary_cross_entropy_with_logits(xv @ w, y_val).item() if len(y_val) else 0.0
            train = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w, y_train).item()
        log(f"  probe l2={l2:g}: train loss {train:.4f}, validation loss {val:.4f}")
        if best is None or val < best[0]:
            best = (val, train, l2, w.detach() / scale)
    return best


def write_readout(model, w, good_id: int, bad_id: int) -> None:
    """Put the read-out in the head: l_good - l_bad = w . h."""
    import torch

    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[good_id] = (w / 2).to(head.device, head.dtype)
        head[bad_id] = (-w / 2).to(head.device, head.dtype)


def tag_logits(model, input_ids, mask, positions_per_row, good_id, bad_id):
    """l_good - l_bad at each scored tag (with gradients), rows in order."""
    import torch

    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
    rows = torch.tensor([r for r, ps in enumerate(positions_per_row) for _ in ps], device=hidden.device)
    cols = torch.tensor([p for ps in positions_per_row for p in ps], device=hidden.device)
    picked = hidden[rows, cols]
    head = model.get_output_embeddings().weight
    return picked @ (head[good_id] - head[bad_id])


def finetune(model, train_items, val_items, config: TrainConfig, pad_id, good_id, bad_id, log):
    """full / lora: AdamW over the training steps, keeping the weights of the best validation loss."""
    import torch

    torch.manual_seed(config.seed)
    if config.method == "lora":  # adapters on the attention projections; the probe's read-out stays fixed
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.0,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    # The causal LM itself (inside peft's wrapper for LoRA, its layers carrying the adapters).
    lm = model.get_base_model() if config.method == "lora" else model

    device = next(lm.parameters()).device

    def loss_of(batch, train: bool):
        input_ids, mask = _pad(batch, pad_id, device)
        logits = tag_logits(lm, input_ids, mask, [b[1] for b in batch], good_id, bad_id)
        y = torch.tensor([v for b in batch for v in b[2]], dtype=torch.float32, device=device)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum"), len(y)

    def evaluate() -> float:
        total, n = 0.0, 0
        with torch.no_grad():
            for batch in _batches(val_items, config.batch_size):
                loss, k = loss_of(batch, False)
                total, n = total + loss.item(), n + k
        return total / max(n, 1)

    best = (evaluate(), None)
    log(f"  epoch 0: validation loss {best[0]:.4f}")
    rng = random.Random(config.seed)
    for epoch in range(1, config.epochs + 1):
        model.train()
        batches = list(_batches(train_items, config.batch_size))
        rng.shuffle(batches)
        for batch in batches:
            opt.zero_grad()
            loss, k = loss_of(batch, True)
            (loss / k).backward()
            opt.step()
        model.eval()
        val = evaluate()
        log(f"  epoch {epoch}: validation loss {val:.4f}")
        if val < best[0]:  # keep only what training changes (a full copy of a large model would not fit)
            best = (val, {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad})
        else:
            break  # early stopping: validation loss stopped falling
    if best[1] is not None:
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k in best[1]:
                    p.copy_(best[1][k])
    if config.method == "lora":
        model = model.merge_and_unload()
    return model, best[0]


# ---- the command ------------------------------------------------------------------------------

def train_verifier(labels: str | Path, out: str | Path, config: TrainConfig,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, validate and save a verifier; returns what `ttc_verifier.json` records."""
    import torch

    from ttc.core.config import validate
    from ttc.default_model import ensure_default_model
    from verifiers.prm_transformers import TransformersPRMConfig, TransformersPRMScorer

    started = time.monotonic()
    torch.manual_seed(config.seed)
    records = read_labels(labels)
    base = config.base or str(ensure_default_model(log=lambda m: log(m)))
    items = examples(records, config.targets)
    if not items:
        raise ConfigError(f"label file {str(labels)!r} holds no sample with a known target")
    train_ids, val_ids = split_problems(len(records), config.validation_share, config.seed)
    if not train_ids or not val_ids:
        raise ConfigError(f"label file {str(labels)!r} has {len(records)} problem(s); training and validation need "
                          "at least 2 problems")
    try:  # the scorer's own input builder, so training reads exactly the positions scoring will
        encoder = TransformersPRMScorer(validate(TransformersPRMConfig, {
            "model": base, "step_tag": config.step_tag, "good_token": config.good_token, "bad_token": config.bad_token,
            "prompt_template": config.prompt_template, "max_length": config.max_length, "device": "cpu"}))
        encoder._load_tokenizer()
    except ConfigError as exc:
        raise ConfigError(f"train-verifier: cannot load base model {base!r}: {exc}") from None
    good_id, bad_id, pad_id = encoder._good_id, encoder._bad_id, encoder._pad_id
    # Each sample's input and the tags that have a target.
    encoded, too_long = {"train": [], "val": []}, 0
    for n, (i, problem, t, values) in enumerate(items):
        try:
            ((ids, positions),) = encoder.encode(problem, [t])
        except VerifierError:  # longer than max_length
            too_long += 1
            continue
        kept = [(p, v) for p, v in zip(positions, values) if v is not None]
        final = len(values) - 1 if values[-1] is not None else None
        part = "train" if i in train_ids else "val"
        encoded[part].append((ids, [p for p, _ in kept], [v for _, v in kept], n, final is not None))
    if not encoded["train"] or not encoded["val"]:
        raise ConfigError(f"label file {str(labels)!r}: no {'training' if not encoded['train'] else 'validation'} "
                          f"sample fits max_length={config.max_length} with a known target; raise max_length")
    model, layer, total_layers = load_base(base, config.layer, config.method)
    model.to(pick_device(config.device)).eval()
    log(f"train-verifier: {len(records)} problems ({len(train_ids)} train / {len(val_ids)} validation), "
        f"{sum(len(e[1]) for e in encoded['train'])} + {sum(len(e[1]) for e in encoded['val'])} scored steps; "
        f"method {config.method}, {layer} of {total_layers} layers")

    def features(part):
        feats, rows = hidden_at_tags(model, [(ids, ps, row) for row, (ids, ps, *_r) in enumerate(encoded[part])],
                                     pad_id, config.batch_size)
        order = sorted(range(len(rows)), key=lambda k: rows[k][0])
        x = torch.cat([feats[k] for k in order]) if feats else torch.zeros(0, model.config.hidden_size)
        y = torch.tensor([v for e in encoded[part] for v in e[2]], dtype=torch.float32)
        return x, y

    # The probe first; full and LoRA training start from its read-out rather than from two random rows.
    for p in model.parameters():
        p.requires_grad_(False)
    x_train, y_train = features("train")
    x_val, y_val = features("val")
    fit_train, fit_val = x_train, x_val
    if config.centre_by_problem:
        fit_train, fit_val = (centre_rows(x, problem_of_rows(encoded[part], items))
                              for x, part in ((x_train, "train"), (x_val, "val")))
    val_loss, train_loss, l2, w = fit_probe(fit_train, y_train, fit_val, y_val, config.l2, config.max_iterations, log)
    write_readout(model, w, good_id, bad_id)
    chosen = {"chosen_l2": l2, "probe_train_loss": round(train_loss, 5), "probe_validation_loss": round(val_loss, 5)}
    if config.method != "probe":
        for p in model.parameters():
            p.requires_grad_(config.method == "full")
        model, val_loss = finetune(model, [(e[0], e[1], e[2]) for e in encoded["train"]],
                                   [(e[0], e[1], e[2]) for e in encoded["val"]], config, pad_id, good_id, bad_id, log)
    model.eval()
    if config.method != "probe":  # fine-tuning changed the features; a frozen probe reads the same ones
        x_val, y_val = features("val")
    head = model.get_output_embeddings().weight
    val_logits = (x_val @ (head[good_id] - head[bad_id]).detach().float().cpu()) if len(y_val) else torch.zeros(0)
    validation = _validation_metrics(encoded["val"], val_logits.tolist(), records, items)
    validation["loss"] = round(val_loss, 5)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out)
    encoder._tokenizer.save_pretrained(out)
    info = {
        "format": {"step_tag": config.step_tag, "good_token": config.good_token, "bad_token": config.bad_token,
                   "prompt_template": config.prompt_template, "good_id": good_id, "bad_id": bad_id},
        "base": base, "layers": layer, "base_layers": total_layers,
        "training": {**config.model_dump(mode="json"), **chosen},
        "data": {"labels": str(Path(labels).resolve()), "labels_sha256": file_sha256(Path(labels)),
                 "problems": len(records), "train_problems": len(train_ids),
                 "validation_problems": len(val_ids), "too_long": too_long,
                 "policy": records[0].get("policy"),
                 "train_steps": sum(len(e[1]) for e in encoded["train"]),
                 "validation_steps": sum(len(e[1]) for e in encoded["val"])},
        "validation": validation,
        "train_seconds": round(time.monotonic() - started, 1),
    }
    (out / FORMAT_FILE).write_text(json.dumps(info, indent=2) + "\n")
    (out / "README.md").write_text(model_card(info))
    log(f"train-verifier: saved to {out} in {info['train_seconds']} s; validation {validation}")
    return info


def _validation_metrics(val_encoded, logits: list[float], records, items) -> dict[str, Any]:
    """Step-level AUROC (J >= 0.5 against the score), outcome AUROC, and within-problem AUROC, on validation."""
    from ttc.evaluation.verifier_metrics import within_problem_auroc

    at, steps_y, steps_s, finals = 0, [], [], []
    for ids, positions, values, n, has_final in val_encoded:
        scores = logits[at:at + len(positions)]
        at += len(positions)
        steps_y += [v >= 0.5 for v in values[:-1]] if has_final else [v >= 0.5 for v in values]
        steps_s += scores[:-1] if has_final else scores
        if has_final:
            problem_index = items[n][0]
            finals.append((problem_index, bool(values[-1] >= 0.5), scores[-1]))
    return {
        "step_auroc": _round(auroc(steps_s, steps_y)),
        "outcome_auroc": _round(auroc([s for _, _, s in finals], [y for _, y, _ in finals])),
        "within_problem_auroc": _round(within_problem_auroc([(p, y, s) for p, y, s in finals])),
    }


def _round(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 4)


def model_card(info: dict[str, Any]) -> str:
    t, d, v = info["training"], info["data"], info["validation"]
    return f"""# A process reward model trained by `ttc train-verifier`

Scores every step of a solution: P(good) at the last token of each step tag. Load it with
`verifier: {{name: prm_transformers, model: <this folder>}}` (or `prm_vllm`); the scoring format
below is read from `{FORMAT_FILE}`.

- **Base:** `{info['base']}`, cut after {info['layers']} of {info['base_layers']} layers
- **Method:** {t['method']} (targets: {t['targets']}, seed {t['seed']}{f", L2 {t['chosen_l2']}" if t['method'] == 'probe' else ''})
- **Format:** problem as `{t['prompt_template']!r}`, step tag `{t['step_tag']!r}`, good `{t['good_token']!r}` / bad `{t['bad_token']!r}`
- **Data:** `{d['labels']}`: {d['problems']} problems ({d['train_problems']} train / {d['validation_problems']} validation,
  split by problem), {d['train_steps']} / {d['validation_steps']} scored steps; policy {d.get('policy')}
- **Validation:** loss {v.get('loss')}, step AUROC {v.get('step_auroc')}, outcome AUROC {v.get('outcome_auroc')},
  within-problem AUROC {v.get('within_problem_auroc')}
- **Training time:** {info['train_seconds']} s
"""
