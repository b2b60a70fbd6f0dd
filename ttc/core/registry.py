"""One registry per plugin kind (name -> lazily imported "module:Class") and the one builder.

Built-ins are listed here; third-party packages add their own through the
entry-point groups `ttc.strategies`, `ttc.verifiers` and `ttc.backends`. Nothing
is imported until a name is looked up, so `import ttc` stays fast. `build` is
the only way a plugin is made from user options: the API, the CLI, recipes,
`auto` and Ray replicas all call it.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from typing import Any

from ttc.core.config import validate
from ttc.core.errors import ConfigError


class Registry:
    def __init__(self, kind: str, builtins: dict[str, str], entry_point_group: str):
        self.kind = kind
        self._targets = dict(builtins)
        self._group = entry_point_group
        self._loaded_entry_points = False
        self._cache: dict[str, Any] = {}

    def _load_entry_points(self) -> None:
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        for ep in importlib.metadata.entry_points(group=self._group):
            self._targets.setdefault(ep.name, ep.value)

    def register(self, name: str, target: str | type) -> None:
        """Add a plugin at run time: a "module:Class" string or the class itself."""
        if isinstance(target, str):
            self._targets[name] = target
        else:
            self._targets[name] = f"{target.__module__}:{target.__qualname__}"
            self._cache[name] = target

    def unregister(self, name: str) -> None:
        self._targets.pop(name, None)
        self._cache.pop(name, None)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._targets)

    def get(self, name: str) -> Any:
        self._load_entry_points()
        if name in self._cache:
            return self._cache[name]
        target = self._targets.get(name)
        if target is None:
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint}; valid names are {self.names()}")
        module_name, _, attr = target.partition(":")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        self._cache[name] = obj
        return obj


STRATEGIES = Registry(
    "strategy",
    {
        "repeated_sampling": "strategies.repeated_sampling:RepeatedSampling",
        "best_of_n": "strategies.best_of_n:BestOfN",
        "beam_search": "strategies.beam_search:BeamSearch",
        "dvts": "strategies.dvts:DVTS",
        "rebase": "strategies.rebase:Rebase",
        "particle_filtering": "strategies.particle_filtering:ParticleFiltering",
        "plan_search": "strategies.plan_search:PlanSearch",
        "mrt": "strategies.mrt:MRT",
        "auto": "strategies.auto.strategy:Auto",
    },
    "ttc.strategies",
)

VERIFIERS = Registry(
    "verifier",
    {
        "mean_logprob": "verifiers.logprob:MeanLogprobScorer",
        "oracle": "verifiers.oracle:OracleScorer",
        "code_exec": "verifiers.code_exec:CodeExecScorer",
        "self_eval": "verifiers.self_eval:SelfEvalScorer",
        "prm_transformers": "verifiers.prm_transformers:TransformersPRMScorer",
        "prm_vllm": "verifiers.prm_vllm:VLLMPRMScorer",
        "fake": "verifiers.fake:FakeScorer",
    },
    "ttc.verifiers",
)

BACKENDS = Registry(
    "backend",
    {
        "vllm": "workers.vllm_local:VLLMGenerator",
        "openai": "workers.openai_http:OpenAIHTTPGenerator",
        "fake": "workers.fake:FakeGenerator",
    },
    "ttc.backends",
)

#: Plugin kind -> its registry, for `build`.
REGISTRIES: dict[str, Registry] = {"strategy": STRATEGIES, "verifier": VERIFIERS, "backend": BACKENDS}


def build(kind: str, name: str, options: dict[str, Any] | None = None, *, prefix: str | None = None,
          check_only: bool = False) -> Any:
    """Look `name` up in the `kind` registry, validate `options` against the plugin's own Config
    (every bad field reported at once, under `prefix`, default the plugin's name) and build it with
    `from_config`. `check_only=True` validates and returns None (a plugin that will be built elsewhere,
    e.g. on a Ray replica, still fails here, before any work)."""
    registry = REGISTRIES.get(kind)
    if registry is None:
        raise ConfigError(f"unknown plugin kind {kind!r}; valid kinds are {sorted(REGISTRIES)}")
    cls = registry.get(name)
    config = validate(cls.Config, options, prefix=name if prefix is None else prefix)
    return None if check_only else cls.from_config(config)
