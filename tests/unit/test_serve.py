"""`ttc serve` through the official `openai` client against a live server on 127.0.0.1 (fake backend):
shapes, extra fields, usage equal to the ledger, streaming, auth, bad requests, 429, isolation of
concurrent requests, readiness of a dead backend, graceful shutdown."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from ttc.engine import Engine
from ttc.serve.config import load_serve_config
from ttc.serve.server import build_server, resolve_api_key
from ttc.core.errors import ConfigError
from ttc.testing import FakeGenerator, answer_script


def fake_engine(latency_s: float = 0.0, **kwargs) -> Engine:
    gen = FakeGenerator(answer_script({"42": 0.7, "41": 0.3}), latency_s=latency_s, **kwargs)
    return Engine(backend="fake", generator=gen, verifier="mean_logprob")


@contextlib.contextmanager
def live(engine=None, api_key=None, **overrides):
    config = load_serve_config(None, {"generator.backend": "fake", "serve.port": 0, "budget": 512,
                                      "sampling": {"max_tokens": 64}, **overrides})
    server, engine = build_server(config, api_key=api_key, engine=engine or fake_engine(), log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        engine.close()


def client(url, key="none", **kwargs):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, **kwargs)


def ask(c, text="What is 6 x 7?", **extra):
    return c.chat.completions.create(model="fake", messages=[{"role": "user", "content": text}], extra_body=extra)


def test_chat_with_extra_fields_and_honest_usage():
    with live() as url:
        r = ask(client(url), budget=512, strategy="best_of_n", selection="weighted", strategy_options={"n": 4})
        assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
        ttc = r.model_extra["ttc"]
        assert ttc["strategy"] == "best_of_n" and ttc["candidates"] == 4 and ttc["answer"] in ("42", "41")
        assert "boxed" in r.choices[0].message.content and ttc["metrics"]["selection"] == "weighted"
        # usage is what the search spent (the ledger), all 4 samples, not only the chosen one's tokens
        u = ttc["usage"]
        assert (r.usage.completion_tokens, r.usage.prompt_tokens) == (u["generated_tokens"], u["prompt_tokens"])
        assert r.usage.total_tokens == u["generated_tokens"] + u["prompt_tokens"] + u["verifier_tokens"]
        assert r.usage.completion_tokens > len(r.choices[0].message.content.split())


def test_n_choices_completions_and_models():
    with live() as url:
        c = client(url)
        r = c.chat.completions.create(model="fake", n=2, messages=[{"role": "user", "content": "What is 6 x 7?"}],
                                      extra_body={"budget": 1024, "strategy": "repeated_sampling"})
        assert [ch.index for ch in r.choices] == [0, 1]  # OpenAI's n: choices returned, best first
        done = c.completions.create(model="fake", prompt="What is 6 x 7?", extra_body={"budget": 256})
        assert done.object == "text_completion" and "boxed" in done.choices[0].text
        assert [m.id for m in c.models.list().data] == ["fake"]


def test_streaming_with_progress_then_the_answer_and_usage():
    with live(fake_engine(latency_s=0.3), **{"serve.progress_interval_s": 0.05}) as url:
        stream = client(url).chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "What is 6 x 7?"}], stream=True,
            stream_options={"include_usage": True}, extra_body={"budget": 512, "strategy_options": {"n": 4}})
        chunks = list(stream)
    progress = [ch for ch in chunks if "progress" in (ch.model_extra.get("ttc") or {})]
    assert progress and all(ch.choices[0].delta.content == "" for ch in progress)
    assert any(ch.model_extra["ttc"]["progress"].get("generated_tokens", 0) > 0 for ch in progress) or len(progress) > 2
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert "boxed" in text
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == ["stop"] and chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_auth_on_and_off():
    with live(api_key="s3cret") as url:
        with pytest.raises(openai.AuthenticationError):
            ask(client(url, key="wrong"))
        assert ask(client(url, key="s3cret")).choices
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}  # liveness needs no key
    with live() as url:  # off by default on loopback
        assert ask(client(url, key="anything")).choices
    config = load_serve_config(None, {"serve.host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="API key is required"):
        resolve_api_key(config, None)
    assert resolve_api_key(config, "k") == "k"


@pytest.mark.parametrize("extra, param", [
    ({"budget": 10_000_000}, "budget"),
    ({"budget": -3}, "budget"),
    ({"strategy": "beam"}, "strategy"),
    ({"verifier": "telepathy"}, "verifier"),
    ({"verifier": "prm_vllm"}, "verifier"),  # a registered verifier this server does not serve (it loads a model)
    ({"n": 0}, "n"),
    ({"nonsense_option": 1}, "nonsense_option"),
    ({"selection": "telepathy"}, "selection"),
    ({"temperature": "hot"}, "temperature"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
])
def test_bad_requests_are_400_naming_the_field(extra, param):
    with live() as url:
        c = client(url)
        with pytest.raises(openai.BadRequestError) as info:
            ask(c, **extra)
        error = info.value.body
        assert error["type"] == "invalid_request_error" and (param is None or error["param"] == param), error
        if param:
            assert param in error["message"]
        for bad in (b"{not json", b"[" * 200_000):
            raw = httpx.post(f"{url}/v1/chat/completions", content=bad, headers={"content-type": "application/json"})
            assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
        assert ask(c).choices  # the server lives on


def test_a_full_queue_answers_429_with_retry_after():
    with live(fake_engine(latency_s=1.0), **{"serve.max_concurrent": 1, "serve.queue_size": 0}) as url:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(ask, client(url), budget=128)
            time.sleep(0.3)
            with pytest.raises(openai.RateLimitError) as info:
                ask(client(url), budget=128)
            assert info.value.response.headers["retry-after"] == "1"
            assert first.result().choices
        metrics = httpx.get(f"{url}/metrics").text
        assert 'ttc_requests_total{endpoint="chat",status="429"} 1.0' in metrics
        assert 'ttc_tokens_total{kind="generated_tokens"}' in metrics and "ttc_queue_depth" in metrics


def test_streamed_requests_count_against_the_queue_too():
    with live(fake_engine(latency_s=1.0), **{"serve.max_concurrent": 1, "serve.queue_size": 0}) as url:
        def streamed():
            try:
                return len(list(client(url).chat.completions.create(
                    model="fake", messages=[{"role": "user", "content": "What is 6 x 7?"}], stream=True,
                    extra_body={"budget": 128})))
            except openai.RateLimitError:
                return "429"

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(lambda _: streamed(), range(6)))
    assert outcomes.count("429") == 5  # one search slot, no queue: the five others are turned away


def test_an_openai_stop_string_and_a_search_that_finds_nothing_in_time():
    with live(fake_engine(latency_s=0.5), **{"serve.request_timeout_s": 0.2}) as url:
        with pytest.raises(openai.APIStatusError) as info:
            ask(client(url))
        assert info.value.status_code == 504  # no 200 without choices
    with live() as url:
        r = client(url).chat.completions.create(model="fake", stop="\n\n",
                                                messages=[{"role": "user", "content": "What is 6 x 7?"}])
        assert r.choices and "\n\n" in r.choices[0].message.content  # each sample ended at the stop string


def test_concurrent_requests_keep_their_own_options():
    with live(fake_engine(latency_s=0.2)) as url:
        c = client(url)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(ask, c, strategy="repeated_sampling", strategy_options={"n": k}, budget=1024)
                       for k in (1, 2, 3, 5, 8, 2, 3, 1)]
            results = [f.result() for f in futures]
    assert [r.model_extra["ttc"]["candidates"] for r in results] == [1, 2, 3, 5, 8, 2, 3, 1]


def test_a_refused_request_does_not_make_the_server_unready():
    with live(fake_engine(fail_on_prompt="POISON")) as url:
        with pytest.raises(openai.InternalServerError):
            ask(client(url), text="POISON")
        assert httpx.get(f"{url}/ready").status_code == 200 and ask(client(url)).choices


def test_a_dead_backend_gives_503_and_unready():
    engine = fake_engine(fail_on_call=1, dies=True)
    with live(engine) as url:
        with pytest.raises(openai.InternalServerError) as info:
            ask(client(url))
        assert info.value.status_code == 503
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503 and "fake backend failed" in ready.json()["reason"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_the_request_in_flight(tmp_path):
    recipe = tmp_path / "serve.yaml"
    recipe.write_text("generator: {backend: fake, options: {latency_s: 1.5}}\nbudget: 128\nsampling: {max_tokens: 32}\n"
                      "serve: {shutdown_timeout_s: 20}\n")
    port = free_port()
    env = {**os.environ, "TTC_API_KEY": ""}
    proc = subprocess.Popen([sys.executable, "-m", "ttc.cli", "serve", str(recipe), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        with ThreadPoolExecutor(1) as pool:
            inflight = pool.submit(ask, client(url), budget=128)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            result = inflight.result(timeout=30)
        assert result.choices and json.dumps(result.model_extra["ttc"]["usage"])
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
