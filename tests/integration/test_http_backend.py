"""The OpenAI-compatible HTTP backend against vLLM's own api_server on loopback."""
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from ttc.default_model import ensure_default_model
from ttc.engine import Engine
from workers.vllm_local import count_parameters

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server():
    model = str(ensure_default_model())
    port = _free_port()
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_NUM_OF_RESERVED_CPU="0", HF_HUB_OFFLINE="1",
               VLLM_NO_USAGE_STATS="1", VLLM_LOGGING_LEVEL="WARNING")
    # The `vllm` console script fails under the vllm-cpu distribution name; the module entry point works.
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
         "smollm", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048", "--enforce-eager",
         "--enable-prefix-caching"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vLLM api_server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        else:
            pytest.fail("vLLM api_server did not become healthy in 240 s")
        yield base, model
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_solve_through_an_openai_compatible_server(vllm_server):
    base, model = vllm_server
    engine = Engine(backend="openai", model="smollm",
                    backend_options={"base_url": f"{base}/v1", "tokenizer": model, "num_parameters": count_parameters(model)})
    with engine:
        sol = engine.solve("What is 4 + 4?", 64 * 4, "best_of_n", max_tokens=64, reference="8")
        again = engine.solve("What is 4 + 4?", 64 * 2, "repeated_sampling", max_tokens=64, reference="8")
    assert len(sol.candidates) >= 4  # 4 full-length samples fit; short ones leave room for another round
    assert sol.usage.generated_tokens == sum(c.num_tokens for c in sol.candidates) <= 256
    assert sol.usage.prompt_tokens > 10 and sol.usage.flops > 0
    assert "coverage" in again.metrics
