"""The vLLM PRM scorer on a tiny, randomly initialised Qwen2ForProcessRewardModel.

The checkpoint is built here (2 layers, hidden 128, head_dim 32) with the embedded SmolLM2 tokenizer plus
Qwen2.5-Math-PRM's "<extra_0>" step tag, so the test runs offline in well under a minute of
model time. The scores are meaningless; the tests check structure: one probability per step,
batch invariance, the verifier-token charge, and that steps and scores never misalign.
"""
from __future__ import annotations

import asyncio
import json
import os

import pytest

from ttc.core.errors import VerifierError
from ttc.core.types import Problem, Trajectory

pytestmark = pytest.mark.integration

SEP = "<extra_0>"
# head_dim 32: vLLM's CPU attention supports head sizes 32, 64, 80, ... but not 16 (64 / 4 heads).
HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE = 128, 2, 4, 2, 256


def _traj(steps: list[str]) -> Trajectory:
    return Trajectory(steps=steps, num_tokens=0, finish_reason="stop")


PROBLEM = Problem("What is 12 + 30?")
BATCH = [
    _traj(["12 + 30 = 42.\n\n"]),
    _traj(["First add the tens: 10 + 30 = 40.\n\n", "Then the ones: 40 + 2 = 42.\n\n"]),
    _traj(["Step one.\n\n", "Step two, longer, with numbers 1 2 3.\n\n", "Step three.\n\n", "So the answer is 42."]),
]


@pytest.fixture(scope="module")
def tiny_prm_dir(tmp_path_factory):
    return make_tiny_prm(tmp_path_factory.mktemp("tiny-prm"))


def make_tiny_prm(out):
    """A random Qwen2ForProcessRewardModel checkpoint vLLM can load: model.* backbone + score.{0,2} head."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    from ttc.default_model import ensure_default_model

    tok = AutoTokenizer.from_pretrained(ensure_default_model())
    if tok.convert_tokens_to_ids(SEP) in (None, tok.unk_token_id):
        tok.add_special_tokens({"additional_special_tokens": [SEP]})
    tok.save_pretrained(out)
    vocab = -(-len(tok) // 64) * 64  # room for the added token, rounded up
    config = Qwen2Config(
        vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, intermediate_size=INTERMEDIATE, max_position_embeddings=1024,
        tie_word_embeddings=False, torch_dtype="float32", num_labels=2,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    config.architectures = ["Qwen2ForProcessRewardModel"]
    torch.manual_seed(0)
    backbone = Qwen2Model(config).float()
    weights = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    # A head scaled so that the random model's step probabilities spread over (0, 1), neither
    # all ~0.5 (HF's default init) nor saturated at 0 or 1.
    weights["score.0.weight"] = torch.randn(HIDDEN, HIDDEN) / HIDDEN**0.5
    weights["score.0.bias"] = torch.zeros(HIDDEN)
    weights["score.2.weight"] = torch.randn(2, HIDDEN) * 0.2
    weights["score.2.bias"] = torch.zeros(2)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForProcessRewardModel"]
    return out


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def scorer(tiny_prm_dir, loop):
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from verifiers.prm_vllm import VLLMPRMConfig, VLLMPRMScorer

    s = VLLMPRMScorer(VLLMPRMConfig(model=str(tiny_prm_dir), max_model_len=512, dtype="float32"))
    loop.run_until_complete(s.astart())  # the module's one vLLM start
    yield s
    loop.run_until_complete(s.aclose())


def _score(loop, scorer, trajectories, problem=PROBLEM):
    return loop.run_until_complete(scorer.score(problem, trajectories))


def test_config_is_validated():
    from pydantic import ValidationError

    from verifiers.prm_vllm import VLLMPRMConfig

    c = VLLMPRMConfig(model="/m")
    assert c.step_tag == SEP and c.use_chat_template and c.system_prompt.startswith("Please reason")
    for bad in ({}, {"model": ""}, {"model": "/m", "max_model_len": 4}, {"model": "/m", "step_tag_id": -1},
                {"model": "/m", "returned_token_ids": [5]}, {"model": "/m", "returned_token_ids": [5, 5]},
                {"model": "/m", "gpu_memory_utilization": 0}, {"model": "/m", "unknown": 1}):
        with pytest.raises(ValidationError):
            VLLMPRMConfig(**bad)


def test_engine_options_are_declared_once():
    """The generator and the PRM share each engine option's description and bounds; only defaults differ."""
    from verifiers.prm_vllm import VLLMPRMConfig
    from workers.vllm_engine import VLLMEngineOptions
    from workers.vllm_local import VLLMConfig

    for name, shared in VLLMEngineOptions.model_fields.items():
        for config in (VLLMConfig, VLLMPRMConfig):
            field = config.model_fields[name]
            assert (field.description, field.metadata) == (shared.description, shared.metadata), (config, name)
    generator, prm = VLLMConfig(), VLLMPRMConfig(model="/m")
    assert (generator.max_model_len, generator.cpu_kv_cache_gb, generator.model) == (2048, 4, None)
    assert (prm.max_model_len, prm.cpu_kv_cache_gb) == (4096, 1)
    assert VLLMPRMConfig.model_fields["model"].is_required()


def test_engine_environment_keeps_explicit_settings(monkeypatch, tmp_path):
    from workers.vllm_engine import VLLMEngineOptions, prepare_environment

    names = ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_KVCACHE_SPACE", "VLLM_NO_USAGE_STATS", "HF_HUB_OFFLINE")
    for name in names:
        monkeypatch.setenv(name, "")  # recorded, so the test leaves the environment as it found it
        monkeypatch.delenv(name)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    prepare_environment(VLLMEngineOptions(model=str(tmp_path), cpu_kv_cache_gb=2), cpu=True)
    assert {n: os.environ.get(n) for n in names} == {
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_KVCACHE_SPACE": "7", "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_OFFLINE": "1"}
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    prepare_environment(VLLMEngineOptions(model="org/name", cpu_kv_cache_gb=2), cpu=False)  # GPU, a hub name
    assert os.environ.get("VLLM_CPU_KVCACHE_SPACE") is None and os.environ.get("HF_HUB_OFFLINE") is None


def test_one_probability_per_step_in_one_batch(loop, scorer, tiny_prm_dir):
    from verifiers.prm_vllm import VLLMPRMScorer

    assert scorer.name == "prm_vllm" and VLLMPRMScorer.Config is type(scorer.config)
    assert scorer.num_parameters and scorer.num_parameters > 6_000_000  # embeddings of ~49k tokens x 128
    result = _score(loop, scorer, BATCH)
    assert [len(s) for s in result.step_scores] == [1, 2, 4]
    flat = [p for s in result.step_scores for p in s]
    assert all(0.0 <= p <= 1.0 for p in flat)
    assert len({round(p, 4) for p in flat}) > 1, "a random head should not give every step the same score"


def test_batch_invariance(loop, scorer):
    batched = _score(loop, scorer, BATCH).step_scores
    for traj, expected in zip(BATCH, batched):
        alone = _score(loop, scorer, [traj]).step_scores[0]
        assert alone == pytest.approx(expected, abs=1e-3)


def test_verifier_tokens_are_the_tokenized_inputs(loop, scorer, tiny_prm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_prm_dir)
    sep_id = tok.convert_tokens_to_ids(SEP)
    lengths = []
    for t in BATCH:
        messages = [{"role": "system", "content": scorer.config.system_prompt},
                    {"role": "user", "content": PROBLEM.prompt},
                    {"role": "assistant", "content": "".join(s.rstrip() + SEP for s in t.steps)}]
        ids = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = tok.encode(ids, add_special_tokens=False)
        assert ids.count(sep_id) == len(t.steps)
        lengths.append(len(ids))
    result = _score(loop, scorer, BATCH)
    assert result.verifier_tokens == sum(lengths) == scorer.estimate_tokens(PROBLEM, BATCH)


def test_separator_text_inside_a_step_is_removed_not_misaligned(loop, scorer):
    """Chosen policy: the tag's text is removed from problem and steps, so the count stays one per step."""
    tricky = _traj(["Write <extra_0> here.\n\n", "Done<extra_0>.\n\n"])
    cleaned = _traj(["Write  here.\n\n", "Done.\n\n"])
    problem = Problem("What is <extra_0> 12 + 30?")
    got = _score(loop, scorer, [tricky], problem)
    want = _score(loop, scorer, [cleaned], Problem("What is  12 + 30?"))
    assert len(got.step_scores[0]) == 2
    assert got.step_scores[0] == pytest.approx(want.step_scores[0], abs=1e-3)
    assert got.verifier_tokens == want.verifier_tokens


def test_count_mismatch_raises_verifier_error(loop, scorer):
    tag = scorer._tag_id
    # vLLM returning a different number of rows than steps is refused, naming both counts ...
    with pytest.raises(VerifierError, match="3 step scores for 2 steps"):
        scorer.step_probabilities([[0.5, 0.5]] * 3, [1, tag, 3, tag, 5, 6], 2)
    # ... while one row per input token (a vLLM that ignored the tag) is narrowed to the tag rows.
    per_token = [[0.9, 0.1], [0.2, 0.8], [0.9, 0.1], [0.7, 0.3], [0.9, 0.1], [0.9, 0.1]]
    assert scorer.step_probabilities(per_token, [1, tag, 3, tag, 5, 6], 2) == pytest.approx([0.8, 0.3])
    # An input whose tag count differs from its step count is refused before it is sent. Removing
    # the tag's text makes that unreachable with the default tag, so use a tag id the chat template
    # itself emits (three "<|im_end|>": system, user, assistant) for a one-step trajectory.
    from verifiers.prm_vllm import VLLMPRMConfig, VLLMPRMScorer

    im_end = scorer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    other = VLLMPRMScorer(VLLMPRMConfig(model=scorer.config.model, step_tag_id=im_end))
    with pytest.raises(VerifierError, match=r"holds 3 step tags .* for 1 steps"):
        loop.run_until_complete(other.score(PROBLEM, [BATCH[0]]))


def test_scores_match_a_transformers_reference(loop, scorer, tiny_prm_dir):
    """The probability of label 1 at each separator, computed from the same weights without vLLM."""
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2Model

    w = load_file(str(tiny_prm_dir / "model.safetensors"))
    backbone = Qwen2Model(Qwen2Config.from_pretrained(tiny_prm_dir)).float().eval()
    backbone.load_state_dict({k[len("model."):]: v for k, v in w.items() if k.startswith("model.")})
    got = _score(loop, scorer, BATCH).step_scores
    for traj, scores in zip(BATCH, got):
        ids = scorer.encode(PROBLEM, traj.steps)
        with torch.no_grad():
            h = backbone(torch.tensor([ids])).last_hidden_state[0]
            logits = torch.relu(h @ w["score.0.weight"].T + w["score.0.bias"]) @ w["score.2.weight"].T + w["score.2.bias"]
        positions = [k for k, t in enumerate(ids) if t == scorer._tag_id]
        assert scores == pytest.approx(logits.softmax(-1)[positions, 1].tolist(), abs=1e-3)


def test_empty_trajectory_gets_no_scores_and_costs_nothing(loop, scorer):
    result = _score(loop, scorer, [_traj([]), BATCH[0]])
    assert result.step_scores[0] == [] and len(result.step_scores[1]) == 1
    assert result.verifier_tokens == scorer.estimate_tokens(PROBLEM, [BATCH[0]])


@pytest.mark.slow
def test_math_shepherd_style_causal_lm(tmp_path_factory):
    """Fallback path: a causal LM scored by the softmax over [good, bad] token logits at each tag.

    A second vLLM start (~20 s), for the one path the Qwen PRM checkpoint above cannot cover.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ttc.default_model import ensure_default_model
    from verifiers.prm_vllm import VLLMPRMConfig, VLLMPRMScorer

    out = tmp_path_factory.mktemp("tiny-shepherd")
    tok = AutoTokenizer.from_pretrained(ensure_default_model())
    tok.add_special_tokens({"additional_special_tokens": [SEP]})
    tok.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=-(-len(tok) // 64) * 64, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, intermediate_size=INTERMEDIATE, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(1)
    LlamaForCausalLM(config).float().save_pretrained(out)
    good, bad = tok.convert_tokens_to_ids(["+", "-"])

    with pytest.raises(VerifierError, match="returned_token_ids"):  # a causal LM without them is refused
        VLLMPRMScorer(VLLMPRMConfig(model=str(out))).start()

    loop = asyncio.new_event_loop()
    s = VLLMPRMScorer(VLLMPRMConfig(model=str(out), use_chat_template=False, returned_token_ids=[good, bad],
                                    max_model_len=512, dtype="float32"))
    try:
        result = loop.run_until_complete(s.score(PROBLEM, BATCH))
    finally:
        loop.run_until_complete(s.aclose())
        loop.close()
    assert [len(x) for x in result.step_scores] == [1, 2, 4]
    reference = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    for traj, scores in zip(BATCH, result.step_scores):
        ids = s.encode(PROBLEM, traj.steps)
        with torch.no_grad():
            logits = reference(torch.tensor([ids])).logits[0]
        positions = [k for k, t in enumerate(ids) if t == s._tag_id]
        assert scores == pytest.approx(logits[positions][:, [good, bad]].softmax(-1)[:, 0].tolist(), abs=1e-3)
    assert result.verifier_tokens == sum(len(s.encode(PROBLEM, t.steps)) for t in BATCH)
