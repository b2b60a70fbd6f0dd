"""The transformers PRM scorer, on a tiny randomly initialised Llama (plumbing, not quality).

The checkpoint uses the embedded SmolLM2 tokenizer and a 2-layer, 32-wide Llama whose
weights are drawn large enough that scores vary clearly with position and context, so an
off-by-one in the tag positions cannot hide inside the 1e-4 tolerance.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ttc.core.config import validate  # noqa: E402
from ttc.core.errors import ConfigError, VerifierError  # noqa: E402
from ttc.core.types import Problem, Trajectory  # noqa: E402
from verifiers.prm_transformers import TransformersPRMConfig, TransformersPRMScorer  # noqa: E402

PROBLEM = Problem("What is 12 + 30?")
STEPS = [
    "First, add the tens: 10 + 30 = 40.\n\n",
    "Then add the ones: 40 + 2 = 42.\n\n",
    "So the answer is \\boxed{42}.",
]


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ttc.default_model import ensure_default_model

    tok = AutoTokenizer.from_pretrained(str(ensure_default_model()))
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=False, initializer_range=0.5,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    folder = tmp_path_factory.mktemp("tiny_prm")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ref_model(prm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(prm_dir, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(prm_dir)


def make(prm_dir, **options) -> TransformersPRMScorer:
    return TransformersPRMScorer(validate(TransformersPRMConfig, {"model": str(prm_dir), "device": "cpu", **options}))


def traj(steps) -> Trajectory:
    return Trajectory(steps=list(steps), num_tokens=0, finish_reason="stop")


def reference(ref_model, steps, *, tag="\n\n", good="+", bad="-", template="{problem}\n\n", shift=0):
    """Slow and independent: one full forward per growing prefix, P(good) at its last tag token
    (or `shift` tokens before it, to show the test can tell positions apart). Also the length."""
    model, tok = ref_model
    enc = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    g, b = enc(good)[0], enc(bad)[0]
    ids = list(tok.encode(template.format(problem=PROBLEM.prompt)))
    scores = []
    for step in steps:
        ids = ids + enc(step.rstrip()) + enc(tag)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, len(ids) - 1 - shift]
        scores.append(torch.softmax(logits[[g, b]].float(), dim=-1)[0].item())
    return scores, len(ids)


def close(a, b, tol=1e-4):
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


async def test_loads_lazily_and_counts_parameters(prm_dir, ref_model):
    scorer = make(prm_dir)
    assert scorer.name == "prm_transformers" and scorer._model is None
    n = sum(p.numel() for p in ref_model[0].parameters())
    assert scorer.num_parameters == n  # from the safetensors headers, before loading
    await scorer.score(PROBLEM, [traj(STEPS)])
    assert scorer._model is not None and scorer.num_parameters == n
    await scorer.aclose()
    assert scorer._model is None
    assert len((await scorer.score(PROBLEM, [traj(STEPS)])).step_scores[0]) == 3  # reloads after close


def test_an_unreadable_checkpoint_header_only_loses_the_parameter_count(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00")  # cut short inside the header length
    assert make(tmp_path).num_parameters is None  # the FLOPs estimate waits for the loaded model


def test_import_is_cheap():
    code = "import sys, verifiers.prm_transformers; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["False", "False"]


async def test_one_score_per_step_in_unit_interval(prm_dir):
    scorer = make(prm_dir)
    result = await scorer.score(PROBLEM, [traj(STEPS), traj([]), traj(STEPS[:1])])
    assert [len(s) for s in result.step_scores] == [3, 0, 1]
    assert all(0.0 < p < 1.0 for s in result.step_scores for p in s)
    assert max(result.step_scores[0]) - min(result.step_scores[0]) > 0.01  # the model is not flat


async def test_scores_match_slow_reference(prm_dir, ref_model):
    scorer = make(prm_dir)
    got = (await scorer.score(PROBLEM, [traj(STEPS)])).step_scores[0]
    want, _ = reference(ref_model, STEPS)
    assert close(got, want), (got, want)
    shifted, _ = reference(ref_model, STEPS, shift=1)  # the neighbouring position scores differently
    assert not close(got, shifted, tol=1e-3)


async def test_batching_and_padding_do_not_change_scores(prm_dir):
    trajs = [traj(STEPS), traj(STEPS[:1]), traj(["x = 1\n\n", "y = 2"] * 4), traj(["short"])]
    alone = [(await make(prm_dir, batch_size=1).score(PROBLEM, [t])).step_scores[0] for t in trajs]
    for bs in (2, 8):
        together = (await make(prm_dir, batch_size=bs).score(PROBLEM, trajs)).step_scores
        assert all(close(a, b) for a, b in zip(together, alone)), (bs, together, alone)


async def test_multi_token_step_tag(prm_dir, ref_model):
    tag = " ки"
    assert len(ref_model[1].encode(tag, add_special_tokens=False)) > 1  # really several tokens
    scorer = make(prm_dir, step_tag=tag, prompt_template="Question: {problem}\nAnswer: ")
    got = (await scorer.score(PROBLEM, [traj(STEPS)])).step_scores[0]
    want, _ = reference(ref_model, STEPS, tag=tag, template="Question: {problem}\nAnswer: ")
    assert close(got, want), (got, want)


async def test_tag_text_inside_a_step_adds_no_score(prm_dir, ref_model):
    steps = ["We know a = 2.\n\nAnd b = 3.\n\n", "So a + b = 5 ки done ки"]
    for tag in ("\n\n", " ки"):
        got = (await make(prm_dir, step_tag=tag).score(PROBLEM, [traj(steps)])).step_scores[0]
        assert len(got) == 2
        assert close(got, reference(ref_model, steps, tag=tag)[0]), tag


async def test_verifier_tokens_are_the_input_length(prm_dir, ref_model):
    scorer = make(prm_dir)
    trajs = [traj(STEPS), traj(STEPS[1:]), traj([])]
    want = sum(reference(ref_model, t.steps)[1] for t in trajs if t.steps)
    assert scorer.estimate_tokens(PROBLEM, trajs) == want
    assert (await scorer.score(PROBLEM, trajs)).verifier_tokens == want
    assert (await scorer.score(PROBLEM, [traj([])])).verifier_tokens == 0


async def test_too_long_input_is_an_error_naming_the_length(prm_dir, ref_model):
    scorer = make(prm_dir, max_length=16)
    n = reference(ref_model, STEPS)[1]
    with pytest.raises(VerifierError, match=f"{n} tokens.*max_length=16"):
        await scorer.score(PROBLEM, [traj(STEPS)])


async def test_multi_token_good_token_is_a_config_error(prm_dir):
    scorer = make(prm_dir, good_token=" good step")
    with pytest.raises(ConfigError, match="good_token=' good step'"):
        await scorer.score(PROBLEM, [traj(STEPS)])
    with pytest.raises(ConfigError, match="bad_token=' ки'"):
        make(prm_dir, bad_token=" ки").estimate_tokens(PROBLEM, [traj(STEPS)])


def test_missing_model_folder_is_named(tmp_path):
    missing = tmp_path / "no_such_prm"
    with pytest.raises(ConfigError, match="no_such_prm"):
        make(missing)


async def test_unloadable_model_name_is_named():
    scorer = TransformersPRMScorer(TransformersPRMConfig(model="not-a-real-org/not-a-real-prm-xyz", device="cpu"))
    with pytest.raises(ConfigError, match="not-a-real-prm-xyz"):
        await scorer.score(PROBLEM, [traj(STEPS)])


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"max_length": 8}, "max_length"),
        ({"device": "tpu"}, "device"),
        ({"dtype": "int8"}, "dtype"),
        ({"good_token": "+", "bad_token": "+"}, "must differ"),
        ({"prompt_template": "{question}"}, "prompt_template"),
        ({"batch": 4}, "unknown option 'batch'"),
    ],
)
def test_config_validation(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        validate(TransformersPRMConfig, {"model": "m", **options})


def test_model_is_required():
    with pytest.raises(ConfigError, match="model"):
        validate(TransformersPRMConfig, {})
