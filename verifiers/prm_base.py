"""What the process reward models share: a model of their own, and where they run."""
from __future__ import annotations

from typing import Any

from ttc.core.plugins import Scorer
from workers.vllm_engine import count_parameters


class PRMScorer(Scorer):
    """A scorer that holds a model of its own: under a `cluster:` section it runs on its own pool of
    replicas; its name and parameter count (FLOPs) come from its checkpoint."""

    runs_on_replicas = True

    def __init__(self, config: Any, source: str | None = None):
        super().__init__(config)
        self.model_name = config.model
        # From the safetensors headers of `source` (the checkpoint folder); None for a model name.
        self.num_parameters = count_parameters(source if source is not None else config.model)
