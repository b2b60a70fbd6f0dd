"""Running the app: uvicorn on one engine, auth rules, and a graceful stop on SIGTERM.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and lets the requests in flight finish
for up to `serve.shutdown_timeout_s`; then the engine is closed.
"""
from __future__ import annotations

import os
import signal

import uvicorn

from ttc.core.errors import ConfigError
from ttc.serve.config import ServeConfig, is_loopback


def resolve_api_key(config: ServeConfig, given: str | None) -> str | None:
    """The bearer token: --api-key, else the configured environment variable; required off loopback."""
    key = given or os.environ.get(config.serve.api_key_env) or None
    if key is None and not is_loopback(config.serve.host):
        raise ConfigError(f"serve.host={config.serve.host!r} is not a loopback address: an API key is required "
                          f"(--api-key or ${config.serve.api_key_env})")
    return key


class GracefulServer(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM or SIGINT is not raised again once the graceful stop is done:
    uvicorn would, killing the process before `serve` closes the engine (and its model processes)."""

    def handle_exit(self, sig: int, frame) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for requests in flight
        else:
            self.should_exit = True


def build_server(config: ServeConfig, *, api_key: str | None = None, engine=None, log_level: str = "info"):
    """(uvicorn server, Engine) ready to run; the engine is started first, so readiness means it."""
    from ttc.engine import Engine
    from ttc.serve.app import create_app

    key = resolve_api_key(config, api_key)
    engine = engine or Engine(config.engine_config()).start()
    app = create_app(engine, config, api_key=key)
    uv = uvicorn.Config(app, host=config.serve.host, port=config.serve.port, log_level=log_level,
                        timeout_graceful_shutdown=config.serve.shutdown_timeout_s, lifespan="off",
                        access_log=False)
    return GracefulServer(uv), engine


def serve(config: ServeConfig, *, api_key: str | None = None, log_level: str = "info") -> None:
    server, engine = build_server(config, api_key=api_key, log_level=log_level)
    try:
        server.run()
    finally:
        engine.close()
