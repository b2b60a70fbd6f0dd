"""OpenAIHTTPGenerator against mocked and loopback servers: request shape, accounting, retries, errors."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pydantic
import pytest

from ttc.core.errors import BackendError
from ttc.core.types import GenerationRequest, Problem, SamplingParams
from workers import openai_http
from workers.openai_http import OpenAIHTTPConfig, OpenAIHTTPGenerator

BASE = "http://mock.invalid/v1"  # only ever reached through MockTransport


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    # A proxy would reroute loopback traffic, and a developer's key would leak into headers.
    for var in ("OPENAI_API_KEY", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def cfg(**kw) -> OpenAIHTTPConfig:
    kw.setdefault("base_url", BASE)
    kw.setdefault("model", "m")
    kw.setdefault("backoff_s", 0.001)
    return OpenAIHTTPConfig(**kw)


def choice(i, text="x", finish="stop", tokens=None, lps=None):
    c = {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
    if tokens is not None:
        c["logprobs"] = {"tokens": tokens, "token_logprobs": lps or [-0.5] * len(tokens)}
    return c


def body(choices, prompt_tokens=5, completion_tokens=None, cached=None):
    usage = {"prompt_tokens": prompt_tokens}
    if completion_tokens is not None:
        usage["completion_tokens"] = completion_tokens
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "cmpl-1", "object": "text_completion", "choices": choices, "usage": usage}


def gen_with(handler, **kw) -> OpenAIHTTPGenerator:
    return OpenAIHTTPGenerator(cfg(**kw), transport=httpx.MockTransport(handler))


def req(prompt="p", **params) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, params=SamplingParams(**params))


async def test_request_body_fields_and_auth():
    seen = []

    def handler(request: httpx.Request):
        b = json.loads(request.content)
        seen.append((str(request.url), request.headers.get("authorization"), b))
        return httpx.Response(200, json=body([choice(i, tokens=["a"]) for i in range(b["n"])]))

    gen = gen_with(handler, model="qwen", api_key="k")
    await gen.generate([req("hello", n=2, stop=("\n\n", "END"), seed=7, logprobs=3, temperature=0.5, max_tokens=9)])
    await gen.generate([req("bye")])
    await gen.aclose()
    url, auth, b = seen[0]
    assert url == f"{BASE}/completions" and auth == "Bearer k"
    assert b == {
        "model": "qwen", "prompt": "hello", "n": 2, "temperature": 0.5, "top_p": 1.0,
        "max_tokens": 9, "stop": ["\n\n", "END"], "seed": 7, "logprobs": 3,
    }
    plain = seen[1][2]
    assert "stop" not in plain and "seed" not in plain and plain["logprobs"] == 0 and plain["n"] == 1


async def test_api_key_from_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "envkey")
    auths = []

    def handler(request):
        auths.append(request.headers.get("authorization"))
        return httpx.Response(200, json=body([choice(0, tokens=["a"])]))

    gen = gen_with(handler)
    await gen.generate([req()])
    assert auths == ["Bearer envkey"]


async def test_token_counts_logprobs_and_cached():
    def handler(request):
        return httpx.Response(200, json=body(
            [choice(0, "ab", tokens=["a", "b"], lps=[-1.0, -2.0]), choice(1, "c", tokens=["c"])],
            prompt_tokens=11, completion_tokens=3, cached=8,
        ))

    gen = gen_with(handler)
    [with_lp] = await gen.generate([req(n=2, logprobs=0)])
    [without_lp] = await gen.generate([req(n=2)])
    assert [c.num_tokens for c in with_lp.completions] == [2, 1]
    assert with_lp.completions[0].token_logprobs == [-1.0, -2.0]
    assert with_lp.prompt_tokens == 2 * 11 and with_lp.cached_prompt_tokens == 2 * 8  # once per sequence
    assert all(c.token_logprobs is None for c in without_lp.completions)


async def test_usage_fallback_when_no_logprobs_tokens():
    def handler(request):
        n = json.loads(request.content)["n"]
        return httpx.Response(200, json=body([choice(i, "some words here") for i in range(n)], completion_tokens=7))

    gen = gen_with(handler)
    [one] = await gen.generate([req(n=1)])
    assert one.completions[0].num_tokens == 7 and one.cached_prompt_tokens == 0
    [three] = await gen.generate([req(n=3)])  # split evenly, remainder to the first, total exact
    assert [c.num_tokens for c in three.completions] == [3, 2, 2]


async def test_finish_reason_mapping_and_order_by_index():
    def handler(request):
        return httpx.Response(200, json=body([
            choice(3, "d", finish=None, tokens=["d"]), choice(1, "b", finish="length", tokens=["b"]),
            choice(0, "a", finish="stop", tokens=["a"]), choice(2, "c", finish="abort", tokens=["c"]),
        ]))

    [res] = await gen_with(handler).generate([req(n=4)])
    assert [c.text for c in res.completions] == ["a", "b", "c", "d"]
    assert [c.finish_reason for c in res.completions] == ["stop", "length", "abort", "abort"]


async def test_concurrency_bounded_and_results_in_order():
    live = peak = 0

    async def handler(request):
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.01)
        live -= 1
        prompt = json.loads(request.content)["prompt"]
        return httpx.Response(200, json=body([choice(0, prompt, tokens=[prompt])]))

    gen = gen_with(handler, max_concurrency=4)
    results = await gen.generate([req(f"p{i}") for i in range(20)])
    assert [r.completions[0].text for r in results] == [f"p{i}" for i in range(20)]
    assert peak == 4


async def test_retry_then_success_on_503_and_connect_error():
    calls = 0

    def handler(request):
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(503, json={"message": "overloaded"})
        if calls == 2:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=body([choice(0, tokens=["a"])]))

    [res] = await gen_with(handler, max_retries=3).generate([req()])
    assert calls == 3 and res.completions[0].num_tokens == 1
    # Both retried attempts are reported lost: the 503 with an upper bound (prompt as counted plus
    # n x max_tokens), the refused connection with nothing (the server never saw it).
    bound = OpenAIHTTPGenerator(cfg()).count_tokens("p") + 1 * 256
    assert (res.lost_requests, res.lost_tokens) == (2, bound)


async def test_retry_after_honoured_and_capped(monkeypatch):
    waits = []

    async def fake_sleep(s):
        waits.append(s)

    monkeypatch.setattr(openai_http, "_sleep", fake_sleep)
    hints = iter(["1000", "2", "soon"])

    def handler(request):
        hint = next(hints, None)
        if hint is None:
            return httpx.Response(200, json=body([choice(0, tokens=["a"])]))
        return httpx.Response(429, headers={"Retry-After": hint}, json={"error": {"message": "slow down"}})

    await gen_with(handler, max_retries=3, backoff_s=0.25).generate([req()])
    assert waits == [30.0, 2.0, 1.0]  # capped hint, hint, own back-off (0.25 doubled twice)


async def test_gives_up_after_max_retries():
    calls = 0

    def handler(request):
        nonlocal calls
        calls += 1
        return httpx.Response(500, json={"error": {"message": "engine dead"}})

    with pytest.raises(BackendError) as ei:
        await gen_with(handler, max_retries=2).generate([req()])
    assert calls == 3 and ei.value.retryable
    # The two retried attempts are lost; the last one the caller counts from its reservation.
    bound = OpenAIHTTPGenerator(cfg()).count_tokens("p") + 256
    assert (ei.value.lost_requests, ei.value.lost_tokens) == (2, 2 * bound)
    msg = str(ei.value)
    assert f"{BASE}/completions" in msg and "3 attempt" in msg and "engine dead" in msg


@pytest.mark.parametrize("payload", [
    {"error": {"message": "This model's maximum context length is 4096 tokens", "type": "BadRequestError"}},
    {"message": "This model's maximum context length is 4096 tokens"},
])
async def test_400_is_not_retried(payload):
    calls = 0

    def handler(request):
        nonlocal calls
        calls += 1
        return httpx.Response(400, json=payload)

    with pytest.raises(BackendError) as ei:
        await gen_with(handler, max_retries=3).generate([req()])
    assert calls == 1 and not ei.value.retryable
    assert "400" in str(ei.value) and "maximum context length is 4096" in str(ei.value)


@pytest.mark.parametrize("content", [b"{not json", b'{"choices": [{"index": 0}]}', b'{"choices": []}'])
async def test_malformed_body_not_retried(content):
    calls = 0

    def handler(request):
        nonlocal calls
        calls += 1
        return httpx.Response(200, content=content, headers={"content-type": "application/json"})

    with pytest.raises(BackendError) as ei:
        await gen_with(handler).generate([req()])
    assert calls == 1 and not ei.value.retryable and "malformed" in str(ei.value)


async def test_one_failure_fails_the_whole_batch():
    def handler(request):
        if json.loads(request.content)["prompt"] == "bad":
            return httpx.Response(404, json={"error": {"message": "model 'm' does not exist"}})
        return httpx.Response(200, json=body([choice(0, tokens=["a"])]))

    with pytest.raises(BackendError, match="does not exist"):
        await gen_with(handler).generate([req("ok"), req("bad"), req("ok")])


@pytest.mark.parametrize("field,value", [("timeout_s", 0), ("max_concurrency", 0), ("max_retries", -1),
                                         ("backoff_s", -1), ("base_url", "127.0.0.1:8000")])
def test_config_bounds(field, value):
    with pytest.raises(pydantic.ValidationError, match=field):
        cfg(**{field: value})


def test_config_rejects_unknown_field_and_strips_slash():
    with pytest.raises(pydantic.ValidationError, match="max_tokens"):
        cfg(max_tokens=5)
    assert cfg(base_url="http://h:1/v1/").base_url == "http://h:1/v1"


def test_prompt_and_counting_without_and_with_tokenizer(monkeypatch):
    gen = OpenAIHTTPGenerator(cfg(num_parameters=1000))
    assert gen.model_name == "m" and gen.num_parameters == 1000
    assert gen.render_prompt(Problem(prompt="what is 2+2")) == "what is 2+2"
    # Without a tokenizer: an upper bound of what the server counts (UTF-8 bytes plus special tokens).
    assert gen.count_tokens("a b  c") == 6 + openai_http.SPECIAL_TOKEN_ALLOWANCE
    assert gen.count_tokens("é") == 2 + openai_http.SPECIAL_TOKEN_ALLOWANCE

    class FakeTok:
        chat_template = "{{ x }}"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"

        def encode(self, text, add_special_tokens):
            return list(text)

    loads = []
    monkeypatch.setattr(openai_http, "_load_tokenizer", lambda name: loads.append(name) or FakeTok())
    gen = OpenAIHTTPGenerator(cfg(tokenizer="some/tok"))
    assert loads == []  # lazy: nothing loaded at construction
    assert gen.render_prompt(Problem(prompt="q", system="s")) == "system:s|user:q|assistant:"
    assert gen.count_tokens("abcd") == 4 and loads == ["some/tok"]


async def test_real_loopback_server():
    canned = json.dumps(body([choice(0, " 4", tokens=[" 4"])], prompt_tokens=6, cached=2)).encode()
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(canned)))
            self.end_headers()
            self.wfile.write(canned)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        gen = OpenAIHTTPGenerator(cfg(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", timeout_s=5))
        [res] = await gen.generate([req("2+2=")])
        await gen.aclose()
    finally:
        server.shutdown()
        server.server_close()
    assert seen[0][0] == "/v1/completions" and seen[0][1]["prompt"] == "2+2="
    assert res.completions[0].text == " 4" and res.completions[0].num_tokens == 1
    assert res.prompt_tokens == 6 and res.cached_prompt_tokens == 2


async def test_connection_refused_is_retryable():
    with socket.socket() as s:  # bind then close: the port is free and nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    gen = OpenAIHTTPGenerator(cfg(base_url=url, backoff_s=0, max_retries=2, timeout_s=5))
    with pytest.raises(BackendError) as ei:
        await gen.generate([req()])
    await gen.aclose()
    assert ei.value.retryable and f"{url}/completions" in str(ei.value) and "3 attempt" in str(ei.value)
    assert "ConnectError" in str(ei.value)


# ---- compute lost to retries, and failed batches ----------------------------------------------------

async def test_a_timed_out_attempt_is_lost_with_an_upper_bound_and_a_reported_one_with_the_servers_count():
    calls = 0

    def handler(request):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadTimeout("no answer", request=request)
        if calls == 2:  # a server that says what the failed attempt used
            return httpx.Response(500, json={"error": {"message": "oom"},
                                             "usage": {"prompt_tokens": 5, "completion_tokens": 12}})
        if calls == 3:  # rate-limited: refused, nothing computed
            return httpx.Response(429, json={"error": {"message": "slow down"}})
        return httpx.Response(200, json=body([choice(i, tokens=["a"]) for i in range(2)]))

    gen = gen_with(handler, max_retries=3)
    [res] = await gen.generate([req("two words", n=2, max_tokens=10)])
    assert calls == 4
    assert res.lost_requests == 3
    assert res.lost_tokens == (gen.count_tokens("two words") + 2 * 10) + 17 + 0


async def test_a_failed_batch_reports_every_retried_attempt_of_every_request():
    seen: dict[str, int] = {}

    def handler(request):
        prompt = json.loads(request.content)["prompt"]
        seen[prompt] = seen.get(prompt, 0) + 1
        if prompt == "bad":
            return httpx.Response(503, json={"message": "overloaded"})
        if seen[prompt] == 1:  # the sibling is retried once, then succeeds
            return httpx.Response(502, json={"message": "bad gateway"})
        return httpx.Response(200, json=body([choice(0, tokens=["a"])]))

    gen = gen_with(handler, max_retries=2)
    with pytest.raises(BackendError) as ei:
        await gen.generate([req("ok", max_tokens=4), req("bad", max_tokens=4)])
    # "bad": 3 attempts, the last counted by the caller; "ok": 1 retried attempt (its success is discarded).
    assert seen == {"ok": 2, "bad": 3}
    assert ei.value.lost_requests == 2 + 1
    assert ei.value.lost_tokens == 2 * (gen.count_tokens("bad") + 4) + (gen.count_tokens("ok") + 4)


async def test_a_failed_request_cancels_its_siblings_at_once():
    started, cancelled = [], []

    async def handler(request):
        prompt = json.loads(request.content)["prompt"]
        started.append(prompt)
        if prompt == "bad":
            await asyncio.sleep(0.02)  # fails while its siblings are still being served
            return httpx.Response(400, json={"error": {"message": "prompt too long"}})
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(prompt)
            raise
        return httpx.Response(200, json=body([choice(0, tokens=["a"])]))

    gen = gen_with(handler)
    before = asyncio.all_tasks()
    with pytest.raises(BackendError, match="prompt too long"):
        await asyncio.wait_for(gen.generate([req("slow1"), req("bad"), req("slow2")]), 5)
    assert sorted(started) == ["bad", "slow1", "slow2"]
    assert sorted(cancelled) == ["slow1", "slow2"]  # both siblings stopped, not left running
    assert not [t for t in asyncio.all_tasks() - before if not t.done()]


@pytest.fixture(scope="module")
def server_tokenizers():
    """Real tokenizers a server might count with: a byte-level BPE trained here, and the embedded
    SmolLM2 tokenizer when its converted checkpoint is on this machine. Each counts with BOS added."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = ["What is 12 + 30? The answer is \\boxed{42}.", "Find the remainder when 2^100 is divided by 7.",
              "Let's think step by step.\n\n", "Ünïcödé ☃ 数学 🙂"] * 50
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    counters = {"byte-level BPE": lambda text: len(bpe.encode(text).ids) + 1}
    from ttc.default_model import default_model_dir

    path = default_model_dir() / "tokenizer.json"
    if path.exists():
        smol = tokenizers.Tokenizer.from_file(str(path))
        counters["SmolLM2"] = lambda text: len(smol.encode(text, add_special_tokens=True).ids) + 1
    return counters


PROMPTS = ["", "a", "What is 2 + 2?", "   \n\n\t", "Ünïcödé ☃ 数学 🙂 ∑ x² ≤ √π",
           "<|im_start|>user\nWhat is 6 + 7? Put the answer in \\boxed{}.<|im_end|>\n<|im_start|>assistant\n",
           "ﬁ ﬀ Å Ω ﷽ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "1234567890" * 20, "🙂" * 30]


def test_the_prompt_count_without_a_tokenizer_is_never_below_the_servers(server_tokenizers):
    gen = OpenAIHTTPGenerator(cfg())
    for name, server_count in server_tokenizers.items():
        for text in PROMPTS:
            assert gen.count_tokens(text) >= server_count(text), (name, text)


async def test_a_prompt_cap_holds_against_the_servers_count_without_a_tokenizer(server_tokenizers):
    # The audit's case: prompts counted by words were charged the server's (larger) count, past the cap.
    from ttc.core.budget import Budget, Ledger
    from ttc.core.context import SearchContext

    server_count = server_tokenizers["byte-level BPE"]

    def handler(request):
        prompt = json.loads(request.content)["prompt"]
        return httpx.Response(200, json=body([choice(0, tokens=["a"])], prompt_tokens=server_count(prompt)))

    cap = 120
    ledger = Ledger(Budget(prompt_tokens=cap))
    ctx = SearchContext(Problem("q"), "", gen_with(handler), ledger)
    sent = 0
    for text in PROMPTS * 3:
        [res] = await ctx.generate([req(text, max_tokens=1)])
        sent += res is not None
    assert sent >= 3 and ledger.usage.prompt_tokens <= cap
