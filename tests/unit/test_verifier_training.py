"""`ttc train-verifier` on a tiny random checkpoint: it trains in seconds, lowers the loss, and the saved
verifier loads (by path and by name) in both PRM scorers and scores steps at the right positions."""
from __future__ import annotations

import json
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ttc.core.config import validate  # noqa: E402
from ttc.core.errors import ConfigError  # noqa: E402
from ttc.core.types import Problem, Trajectory  # noqa: E402
from ttc.verifier_training import TrainConfig, train_verifier  # noqa: E402


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ttc.default_model import ensure_default_model

    tok = AutoTokenizer.from_pretrained(str(ensure_default_model()))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_base")
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def steps_of(good: bool, rng) -> list[str]:
    return [f"Let me think {rng.randrange(100)}.\n\n", f"This is {'right' if good else 'wrong'}.\n\n",
            f"So \\boxed{{{1 if good else 2}}}"]


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    """Labels whose verdict is written in the second step: a probe that reads the right positions learns it."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("labels") / "labels.jsonl"
    with open(path, "w") as f:
        for i in range(24):
            samples = []
            for good in (True, False, rng.random() < 0.5, rng.random() < 0.5):
                j = [0.5, 0.9 if good else 0.1, float(good)]
                samples.append({"steps": steps_of(good, rng), "j": j, "labels": [int(v >= 0.5) for v in j],
                                "answer": "1" if good else "2", "correct": good, "num_tokens": 12,
                                "finish_reason": "stop"})
            f.write(json.dumps({"id": f"p{i}", "prompt": f"Problem {i}?", "reference": "1", "samples": samples,
                                "usage": {}}) + "\n")
    return path


def quiet(_msg):
    return None


def test_probe_trains_lowers_the_loss_and_loads_in_both_scorers(base_dir, labels, tmp_path, monkeypatch):
    from verifiers.prm_transformers import TransformersPRMConfig, TransformersPRMScorer
    from verifiers.prm_vllm import VLLMPRMConfig, VLLMPRMScorer

    monkeypatch.setenv("TTC_HOME", str(tmp_path))
    out = tmp_path / "verifiers" / "tiny"
    info = train_verifier(labels, out, TrainConfig(base=str(base_dir), l2=[1e-4, 1e-2]), log=quiet)
    assert info["layers"] == 3 and info["base_layers"] == 4  # 3/4 of the layers by default
    assert info["validation"]["loss"] < 0.69  # below log 2, the loss of the zero read-out it started from
    assert info["validation"]["within_problem_auroc"] == 1.0 and info["train_seconds"] < 120
    assert (out / "README.md").read_text().startswith("# A process reward model")
    fmt = json.loads((out / "ttc_verifier.json").read_text())["format"]

    rng = random.Random(5)
    problem = Problem("Problem 99?")
    ts = [Trajectory(steps_of(g, rng), 12, "stop") for g in (True, False)]
    for model in (str(out), "tiny"):  # by path, and by name from $TTC_HOME/verifiers
        scorer = TransformersPRMScorer(validate(TransformersPRMConfig, {"model": model, "device": "cpu"}))
        assert scorer.config.model == str(out)
        res = scorer._score_sync(problem, ts)
        (right, wrong) = res.step_scores
        assert len(right) == len(wrong) == 3  # one score per step
        assert right[1] > 0.5 > wrong[1] and right[2] > wrong[2]  # read at the steps that carry the verdict
    vcfg = validate(VLLMPRMConfig, {"model": "tiny"})
    assert vcfg.model == str(out) and vcfg.returned_token_ids == [fmt["good_id"], fmt["bad_id"]]
    assert vcfg.step_tag == fmt["step_tag"] and vcfg.use_chat_template is False
    assert vcfg.prompt_template == fmt["prompt_template"]
    # The vLLM scorer sends the very ids prm_transformers scores, and reads the steps' own tag rows
    # (the template's "\n\n" after the problem is a tag token too, and is skipped).
    vllm_scorer = VLLMPRMScorer(vcfg)
    ids, rows = vllm_scorer.encode_with_rows(problem, ts[0].steps)
    ((t_ids, t_positions),) = scorer.encode(problem, ts[:1])
    tags = [k for k, t in enumerate(ids) if t == vllm_scorer._tag_id]
    assert ids == t_ids and [tags[r] for r in rows] == t_positions and len(tags) == len(rows) + 1
    data = torch.tensor([[0.1, 0.9]] + [[0.2 * (k + 1), 0.0] for k in range(3)])  # one row per tag token
    assert vllm_scorer.step_probabilities(data, ids, 3, rows=rows) == pytest.approx([0.2, 0.4, 0.6])
    # options the user sets win over the trained format
    assert validate(VLLMPRMConfig, {"model": "tiny", "use_chat_template": True}).use_chat_template is True


@pytest.mark.parametrize("method", ["full", "lora"])
def test_full_and_lora_training_run_and_save(base_dir, labels, tmp_path, method):
    from verifiers.prm_transformers import TransformersPRMConfig, TransformersPRMScorer

    pytest.importorskip("peft") if method == "lora" else None
    info = train_verifier(labels, tmp_path / method, TrainConfig(base=str(base_dir), method=method, layer=2,
                                                                 epochs=2, learning_rate=1e-3, l2=[1e-3]), log=quiet)
    assert info["layers"] == 2 and info["validation"]["loss"] <= info["training"]["probe_validation_loss"] + 1e-6
    scorer = TransformersPRMScorer(validate(TransformersPRMConfig, {"model": str(tmp_path / method), "device": "cpu"}))
    res = scorer._score_sync(Problem("Problem 1?"), [Trajectory(steps_of(True, random.Random(1)), 12, "stop")])
    assert len(res.step_scores[0]) == 3


def test_centred_rows_lose_their_problem_mean_and_a_centred_probe_trains(base_dir, labels, tmp_path):
    import torch

    from ttc.verifier_training import centre_rows

    x = torch.tensor([[1.0, 2.0], [3.0, 6.0], [10.0, 0.0]])
    assert torch.allclose(centre_rows(x, [7, 7, 9]), torch.tensor([[-1.0, -2.0], [1.0, 2.0], [0.0, 0.0]]))
    info = train_verifier(labels, tmp_path / "centred", TrainConfig(base=str(base_dir), layer=2, l2=[1e-3],
                                                                    centre_by_problem=True), log=quiet)
    assert info["training"]["centre_by_problem"] is True and info["validation"]["within_problem_auroc"] is not None


def test_training_errors_are_clear(base_dir, labels, tmp_path):
    with pytest.raises(ConfigError, match="cannot load base model"):
        train_verifier(labels, tmp_path / "x", TrainConfig(base=str(tmp_path / "nope")), log=quiet)
    with pytest.raises(ConfigError, match="has 4 layers"):
        train_verifier(labels, tmp_path / "x", TrainConfig(base=str(base_dir), layer=9), log=quiet)
    one = tmp_path / "one.jsonl"
    one.write_text(labels.read_text().splitlines()[0] + "\n")
    with pytest.raises(ConfigError, match="at least 2 problems"):
        train_verifier(one, tmp_path / "x", TrainConfig(base=str(base_dir)), log=quiet)
    with pytest.raises(ConfigError, match="does not exist"):
        train_verifier(tmp_path / "missing.jsonl", tmp_path / "x", TrainConfig(base=str(base_dir)), log=quiet)
