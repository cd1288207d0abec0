"""RQ-VAE (TIGER, Rajput et al. 2023): MLP encoder x -> z, residual quantizer on z, MLP decoder
z_q -> x_hat, trained with

    L = ||x - x_hat||^2 + sum_l ( ||sg[r_l] - c_l||^2 + beta ||r_l - sg[c_l]||^2 ),  beta = 0.25

straight-through gradients, k-means codebook init on the first batch, dead-code restart.
TIGER's exact sizes are 768 -> 512 -> 256 -> 128 -> 32; here the hidden widths are capped by the
input width so small inputs (e.g. 128-d VGGish) get a sensibly sized MLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mmsid.quantizers.loop import fit_epochs, init_rows
from mmsid.quantizers.residual import ResidualQuantizer, ResidualQuantizerConfig
from mmsid.quantizers.rows import batch_reader
from mmsid.quantizers.tokenizer import Tokenizer


@dataclass(frozen=True)
class RQVAEConfig:
    levels: int = 3
    codebook_size: int = 256
    latent_dim: int = 32
    hidden: tuple[int, ...] = (512, 256, 128)
    beta: float = 0.25
    dropout: float = 0.0
    epochs: int = 200
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dead_code_threshold: int = 1  # restart codes used < this many times in an epoch (0 = off)
    ema: bool = False
    seed: int = 0
    checkpoint_every: int = 25  # epochs between checkpoints when fit(checkpoint=...)
    log_steps: bool = False  # keep every step's loss in the history (distributed checks)


def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.SiLU(), nn.Dropout(dropout)] if dropout else [nn.SiLU()]
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    def __init__(self, input_dim: int, cfg: RQVAEConfig) -> None:
        super().__init__()
        hidden = [min(h, max(input_dim, cfg.latent_dim)) for h in cfg.hidden]
        self.encoder = mlp([input_dim, *hidden, cfg.latent_dim], cfg.dropout)
        self.decoder = mlp([cfg.latent_dim, *reversed(hidden), input_dim], cfg.dropout)
        self.rq = ResidualQuantizer(
            cfg=ResidualQuantizerConfig(
                levels=cfg.levels,
                codebook_size=cfg.codebook_size,
                dim=cfg.latent_dim,
                beta=cfg.beta,
                ema=cfg.ema,
                kmeans_init=True,
                dead_code_threshold=cfg.dead_code_threshold,
                seed=cfg.seed,
            )
        )

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """x: (B, D) -> x_hat (B, D), losses, codes (B, L)."""
        z = self.encoder(x)  # (B, latent)
        q = self.rq(z)
        x_hat = self.decoder(q.quantized)  # (B, D)
        losses = {"reconstruction": ((x - x_hat) ** 2).sum(-1).mean(), **q.losses}
        return x_hat, losses, q.codes


class RQVAETokenizer(Tokenizer):
    method = "rq-vae"
    Config = RQVAEConfig

    def _build(self) -> None:
        self.module = RQVAE(self.input_dim, self.cfg)

    def _fit(
        self,
        x: torch.Tensor,
        *,
        device: str = "cpu",
        checkpoint: str | Path | None = None,
        progress: bool = True,
        warm_start: Tokenizer | None = None,
    ) -> None:
        """``warm_start``: a fitted RQ-VAE of the same shapes whose weights (encoder, decoder,
        codebooks) replace the k-means init, so the new fit continues the previous one
        (stable IDs across retrains, mmsid.align); the epochs then fine-tune it."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self._build()
        state = self._warm_state(warm_start)
        model = self.module.to(device)
        n, get = batch_reader(x, device)  # a Rows catalogue: each batch read from the file

        def init() -> None:  # k-means init of every level on one batch's latents (TIGER)
            if state is not None:
                model.load_state_dict(state)
                return
            first = get(init_rows(n, cfg.batch_size, cfg.codebook_size, cfg.seed).to(device))
            model.rq.init_from_data(model.encoder(first))

        def restart(rows: torch.Tensor) -> int:
            return model.rq.restart_dead_codes(model.encoder(get(rows)))

        fit_epochs(
            self,
            n=n,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            param_groups=[
                {"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}
            ],
            weight_decay=cfg.weight_decay,
            shuffle_seed=cfg.seed,
            step_losses=lambda idx: model(get(idx))[1],
            n_items=n,
            init=init,
            restart=restart if cfg.dead_code_threshold > 0 else None,
            device=device,
            checkpoint=checkpoint,
            desc="rq-vae",
            progress=progress,
        )

    # a catalogue larger than memory: the same epochs, every batch read from the file (the
    # same seeded batches as in memory, so the same fit)
    _fit_rows = _fit

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        model = self.module.to(x.device)
        return model.rq.encode(model.encoder(x))

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor) -> float:
        """Mean squared L2 error ||x - D(q(E(x)))||^2 with hard codes."""
        model = self.module.eval()
        z_q = model.rq.decode(model.rq.encode(model.encoder(x)))
        return float(((x - model.decoder(z_q)) ** 2).sum(-1).mean())
