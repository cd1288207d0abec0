"""MMQ — Multimodal Mixture-of-Quantization (arXiv 2508.15281), our reading of it
(../shared/spec/METHODS.md, section MMQ; every choice below is a config field).

Stage 1, a shared-specific tokenizer. The input is the concatenation of M modalities
(``modality_dims`` says how it splits; an absent modality is an all-zero block).
  * specific experts: for each modality m, ``n_specific`` MLPs read x^m -> z (d);
  * shared experts: ``n_shared`` MLPs read [x^1; ...; x^M; presence flags] -> z (d). Our
    choice for missing modalities: zeros plus one presence flag per modality, so a shared
    expert can tell "absent" from "near the origin";
  * mixture of quantization: every expert has its own residual quantizer (``shared_levels`` /
    ``specific_levels`` levels, 1 = plain VQ). The SID is the tuple of all experts' codes,
    shared first, then modality by modality (``order``): parallel, multi-view codes;
  * a softmax gate per group (shared; each modality), computed from that group's input,
    weights the group's quantized outputs; a decoder per modality reconstructs x^m from
    [gated shared ; gated specific of m];
  * loss = sum_m mask_m ||x^m - D_m(.)||^2 + sum_e (codebook + beta commitment)
    + lambda_orth * mean |cos(z_shared, z_specific)| (over shared/specific pairs of an item
    whose modality is present; ``orth_between_specific`` adds pairs of specific experts of
    different modalities); k-means codebook init on the first batch, dead-code restart.

With one modality, no shared experts and one specific expert this is exactly an RQ-VAE
(tested by loading an RQ-VAE's weights and comparing outputs).

Stage 2, behavior-aware fine-tuning (``finetune``): soft indexing (``tau``: softmax over
negative squared distances; forward value = hard code, gradient = soft assignment) lets an
in-batch contrastive loss between items that follow each other in *training* sequences reach
experts, gates and codebooks, while the reconstruction and quantization losses stay on. Hard
SIDs are re-assigned afterwards; the share of items whose SID changed is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmsid.quantizers.loop import fit_epochs, init_rows
from mmsid.quantizers.residual import ResidualQuantizer, ResidualQuantizerConfig
from mmsid.quantizers.rows import Rows, batch_reader
from mmsid.quantizers.rqvae import mlp
from mmsid.quantizers.tokenizer import Tokenizer


@dataclass(frozen=True)
class MMQConfig:
    modality_dims: tuple[int, ...] = ()  # split of the input into modalities; () = one
    n_shared: int = 1
    n_specific: int = 1  # per modality
    shared_levels: int = 1  # residual levels of each shared expert's quantizer
    specific_levels: int = 1
    order: str = "shared-first"  # or "specific-first"
    codebook_size: int = 256
    latent_dim: int = 32
    hidden: tuple[int, ...] = (512, 256, 128)  # capped by the input width, as RQ-VAE
    beta: float = 0.25
    lambda_orth: float = 0.1
    orth_between_specific: bool = False
    epochs: int = 200
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dead_code_threshold: int = 1
    seed: int = 0
    checkpoint_every: int = 25
    log_steps: bool = False  # keep every step's loss in the history (distributed checks)
    # stage 2 (behavior-aware fine-tuning)
    finetune_epochs: int = 20
    finetune_lr: float = 1e-5  # experts, gates, codebooks, decoders: small steps keep IDs stable
    head_lr: float = 1e-3  # the behavior head starts from scratch
    finetune_batch_size: int = 1024
    finetune_pairs_per_epoch: int = 20000  # a fresh seeded sample each epoch; 0 = all pairs
    tau: float = 0.1  # soft-indexing temperature (distances are squared L2 in latent space)
    behavior_weight: float = 1.0
    behavior_temperature: float = 0.1  # InfoNCE temperature
    levels: int = 0  # derived from the expert layout; kept for the tokenizer contract


def sid_length(cfg: MMQConfig) -> int:
    M = max(1, len(cfg.modality_dims))
    return cfg.n_shared * cfg.shared_levels + M * cfg.n_specific * cfg.specific_levels


class MMQ(nn.Module):
    def __init__(self, input_dim: int, cfg: MMQConfig) -> None:
        super().__init__()
        dims = list(cfg.modality_dims) or [input_dim]
        if sum(dims) != input_dim:
            raise ValueError(f"modality_dims {dims} do not add up to the input width {input_dim}")
        if cfg.n_shared + cfg.n_specific == 0:
            raise ValueError("MMQ needs at least one shared or specific expert")
        self.cfg, self.dims, self.M = cfg, dims, len(dims)
        d = cfg.latent_dim

        def expert(width: int) -> nn.Sequential:
            hidden = [min(h, max(width, d)) for h in cfg.hidden]
            return mlp([width, *hidden, d])

        def quantizer(levels: int, i: int) -> ResidualQuantizer:
            return ResidualQuantizer(
                cfg=ResidualQuantizerConfig(
                    levels=levels,
                    codebook_size=cfg.codebook_size,
                    dim=d,
                    beta=cfg.beta,
                    kmeans_init=True,
                    dead_code_threshold=cfg.dead_code_threshold,
                    seed=cfg.seed + 101 * i,
                )
            )

        shared_in = input_dim + self.M  # + one presence flag per modality
        self.shared = nn.ModuleList(expert(shared_in) for _ in range(cfg.n_shared))
        self.specific = nn.ModuleList(
            nn.ModuleList(expert(w) for _ in range(cfg.n_specific)) for w in dims
        )
        self.q_shared = nn.ModuleList(quantizer(cfg.shared_levels, i) for i in range(cfg.n_shared))
        self.q_specific = nn.ModuleList(
            nn.ModuleList(
                quantizer(cfg.specific_levels, 1 + cfg.n_shared + m * cfg.n_specific + e)
                for e in range(cfg.n_specific)
            )
            for m in range(self.M)
        )
        self.gate_shared = nn.Linear(shared_in, cfg.n_shared) if cfg.n_shared else None
        self.gate_specific = (
            nn.ModuleList(nn.Linear(w, cfg.n_specific) for w in dims) if cfg.n_specific else None
        )
        n_in = d * ((cfg.n_shared > 0) + (cfg.n_specific > 0))
        self.decoders = nn.ModuleList(
            mlp([n_in, *reversed([min(h, max(w, d)) for h in cfg.hidden]), w]) for w in dims
        )
        # stage 2: behavior head over the concatenated quantized latents of all experts
        self.behavior = nn.Linear(d * (cfg.n_shared + self.M * cfg.n_specific), d)

    # ---- pieces ---------------------------------------------------------------------------
    def split(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x (B, D) -> per-modality blocks [(B, d_m)] and presence mask (B, M) float."""
        xs = list(torch.split(x, self.dims, dim=1))
        mask = torch.stack([(xm.abs().sum(1) > 0) for xm in xs], 1).to(x.dtype)
        return xs, mask

    def latents(self, x: torch.Tensor):
        """Expert latents: shared [(B, d)] * n_shared, specific [[(B, d)] * n_specific] * M."""
        xs, mask = self.split(x)
        s_in = torch.cat([x, mask], 1)
        z_sh = [e(s_in) for e in self.shared]
        z_sp = [[e(xs[m]) for e in self.specific[m]] for m in range(self.M)]
        return xs, mask, s_in, z_sh, z_sp

    def group_codes(self, codes_sh: list, codes_sp: list) -> torch.Tensor:
        shared = list(codes_sh)
        specific = [c for per_m in codes_sp for c in per_m]
        groups = shared + specific if self.cfg.order == "shared-first" else specific + shared
        return torch.cat(groups, dim=1)  # (B, L)

    def forward(self, x: torch.Tensor, *, tau: float = 0.0) -> dict:
        """x (B, D) -> {"codes" (B, L), "losses" {...}, "q" (B, n_experts * d) quantized
        latents, "gates" {group: (B, n)}, "recon" [(B, d_m)]}."""
        xs, mask, s_in, z_sh, z_sp = self.latents(x)
        out_sh = [q(z, tau=tau) for q, z in zip(self.q_shared, z_sh)]
        out_sp = [
            [q(z, tau=tau) for q, z in zip(self.q_specific[m], z_sp[m])] for m in range(self.M)
        ]
        gates = {}
        h_sh = None
        if self.cfg.n_shared:
            g = torch.softmax(self.gate_shared(s_in), -1)  # (B, n_shared)
            gates["shared"] = g
            h_sh = sum(g[:, e, None] * o.quantized for e, o in enumerate(out_sh))
        recon, rec = [], x.new_zeros(())
        for m in range(self.M):
            parts = [h_sh] if h_sh is not None else []
            if self.cfg.n_specific:
                g = torch.softmax(self.gate_specific[m](xs[m]), -1)  # (B, n_specific)
                gates[f"modality{m}"] = g
                parts.append(sum(g[:, e, None] * o.quantized for e, o in enumerate(out_sp[m])))
            x_hat = self.decoders[m](torch.cat(parts, 1))  # (B, d_m)
            recon.append(x_hat)
            # absent modalities contribute no reconstruction loss
            rec = rec + (mask[:, m] * ((xs[m] - x_hat) ** 2).sum(-1)).mean()
        all_out = out_sh + [o for per_m in out_sp for o in per_m]
        losses = {
            "reconstruction": rec,
            "codebook": sum(o.losses["codebook"] for o in all_out),
            "commitment": sum(o.losses["commitment"] for o in all_out),
        }
        if self.cfg.lambda_orth > 0:
            losses["orthogonality"] = self.cfg.lambda_orth * self.orthogonality(z_sh, z_sp, mask)
        codes = self.group_codes(
            [o.codes for o in out_sh], [[o.codes for o in per_m] for per_m in out_sp]
        )
        q = torch.cat([o.quantized for o in all_out], 1)
        return {"codes": codes, "losses": losses, "q": q, "gates": gates, "recon": recon}

    def orthogonality(self, z_sh, z_sp, mask) -> torch.Tensor:
        """mean |cos| over (shared, specific) expert pairs of an item, counted where the
        specific expert's modality is present (and, optionally, specific pairs across
        modalities where both are present). 0 when no pair exists."""
        terms, weights = [], []
        for m in range(self.M):
            for zs in z_sp[m]:
                for zh in z_sh:
                    terms.append((F.cosine_similarity(zh, zs, dim=-1).abs() * mask[:, m]).sum())
                    weights.append(mask[:, m].sum())
        if self.cfg.orth_between_specific:
            for a in range(self.M):
                for b in range(a + 1, self.M):
                    both = mask[:, a] * mask[:, b]
                    for za in z_sp[a]:
                        for zb in z_sp[b]:
                            terms.append((F.cosine_similarity(za, zb, dim=-1).abs() * both).sum())
                            weights.append(both.sum())
        if not terms:
            return z_sh[0].new_zeros(()) if z_sh else z_sp[0][0].new_zeros(())
        return torch.stack(terms).sum() / torch.stack(weights).sum().clamp_min(1.0)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        _, _, _, z_sh, z_sp = self.latents(x)
        return self.group_codes(
            [q.encode(z) for q, z in zip(self.q_shared, z_sh)],
            [[q.encode(z) for q, z in zip(self.q_specific[m], z_sp[m])] for m in range(self.M)],
        )

    def quantizers_and_latents(self, x: torch.Tensor):
        _, _, _, z_sh, z_sp = self.latents(x)
        pairs = list(zip(self.q_shared, z_sh))
        for m in range(self.M):
            pairs += list(zip(self.q_specific[m], z_sp[m]))
        return pairs


class MMQTokenizer(Tokenizer):
    method = "mmq"
    Config = MMQConfig

    @property
    def levels(self) -> int:
        return sid_length(self.cfg)

    def _build(self) -> None:
        self.module = MMQ(self.input_dim, self.cfg)

    # ---- stage 1 --------------------------------------------------------------------------
    def _fit(
        self,
        x: torch.Tensor,
        *,
        device: str = "cpu",
        checkpoint: str | Path | None = None,
        progress: bool = True,
        warm_start: Tokenizer | None = None,
    ) -> None:
        """``warm_start``: a fitted MMQ of the same layout whose weights (experts, gates,
        codebooks, decoders; fine-tuned or not) replace the k-means init of stage 1 (stable
        IDs across retrains, mmsid.align)."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self._build()
        state = self._warm_state(warm_start)
        self.module.to(device)
        self._loop(
            x,
            state=state,
            stage=1,
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            device=device,
            checkpoint=checkpoint,
            progress=progress,
        )

    def _loop(
        self,
        x,
        *,
        stage,
        epochs,
        lr,
        batch_size,
        device,
        checkpoint,
        progress,
        pairs: torch.Tensor | None = None,
        state: dict | None = None,
    ) -> None:
        """Stage 1 iterates over items; stage 2 over behavior pairs (P, 2), with soft indexing
        and the contrastive loss added (mmsid.quantizers.loop owns the epochs). ``x``: a
        tensor, or :class:`Rows` read a batch at a time."""
        cfg, model = self.cfg, self.module
        n_items, get = batch_reader(x, device)
        head = [p for p in model.behavior.parameters()]
        body = [p for p in model.parameters() if p.requires_grad and all(p is not h for h in head)]
        groups = [{"params": body, "lr": lr}]
        if stage == 2:
            groups.append({"params": head, "lr": cfg.head_lr})

        def init() -> None:  # k-means init of every expert's codebooks on one batch's latents
            if state is not None:  # or the previous fit's weights (a warm start)
                model.load_state_dict(state)
                return
            first = get(init_rows(n_items, batch_size, cfg.codebook_size, cfg.seed).to(device))
            for q, z in model.quantizers_and_latents(first):
                q.init_from_data(z)

        def restart(rows: torch.Tensor) -> int:
            return sum(q.restart_dead_codes(z) for q, z in model.quantizers_and_latents(get(rows)))

        def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
            if stage == 1:
                return model(get(idx))["losses"]
            return self._stage2_losses(get, pairs[idx])

        fit_epochs(
            self,
            n=n_items if stage == 1 else pairs.shape[0],
            per_epoch=None if stage == 1 else cfg.finetune_pairs_per_epoch,
            epochs=epochs,
            batch_size=batch_size,
            param_groups=groups,
            weight_decay=cfg.weight_decay,
            shuffle_seed=cfg.seed + stage,
            step_losses=step,
            n_items=n_items,
            init=init if stage == 1 else None,
            restart=restart if stage == 1 and cfg.dead_code_threshold > 0 else None,
            stage=stage,
            device=device,
            checkpoint=checkpoint,
            desc=f"mmq stage {stage}",
            progress=progress,
        )

    # ---- stage 2 --------------------------------------------------------------------------
    def _stage2_losses(self, get, pair: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction + quantization losses on the batch's items, plus a symmetric in-batch
        InfoNCE between items that follow each other in training sequences; soft indexing
        carries its gradient into experts and codebooks."""
        cfg, model = self.cfg, self.module
        B = pair.shape[0]
        out = model(get(pair.reshape(-1)), tau=cfg.tau)  # (2B, ...)
        e = F.normalize(model.behavior(out["q"]), dim=-1).view(B, 2, -1)
        logits = e[:, 0] @ e[:, 1].T / cfg.behavior_temperature  # (B, B)
        target = torch.arange(B, device=logits.device)
        nce = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        return {**out["losses"], "behavior": cfg.behavior_weight * nce}

    def finetune(
        self,
        x,
        pairs: np.ndarray,
        *,
        device: str = "cpu",
        checkpoint: str | Path | None = None,
        progress: bool = True,
    ) -> dict:
        """Stage 2 on (P, 2) item-row pairs (a, b): b followed a in a training sequence.
        Returns {"sid_changed_share": ..., "pairs": P}."""
        from mmsid.quantizers.tokenizer import check_features

        if self.module is None:
            raise RuntimeError("fit stage 1 before fine-tuning")
        if isinstance(x, (str, Path, Rows)):  # a catalogue read a batch at a time
            t = x if isinstance(x, Rows) else Rows(x)
        else:
            t = check_features(x, dim=self.input_dim).to(device)
        before = self.transform(t, device=device)
        p = torch.as_tensor(np.asarray(pairs), dtype=torch.long, device=device)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
            raise ValueError(f"behavior pairs must be a non-empty (P, 2) array, got {p.shape}")
        self.module.to(device)
        self._loop(
            t,
            stage=2,
            epochs=self.cfg.finetune_epochs,
            lr=self.cfg.finetune_lr,
            batch_size=self.cfg.finetune_batch_size,
            device=device,
            checkpoint=checkpoint,
            progress=progress,
            pairs=p,
        )
        after = self.transform(t, device=device)
        self.finetuned = True
        return {
            "sid_changed_share": float((before != after).any(1).mean()),
            "code_changed_share_by_position": (before != after).mean(0).tolist(),
            "pairs": int(len(p)),
        }

    # a catalogue larger than memory: stage 1 reads each seeded batch from the file
    _fit_rows = _fit

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.to(x.device).encode(x)

    @torch.no_grad()
    def diagnostics(self, x) -> dict:
        """Measured orthogonality (mean |cos| shared vs specific, without the lambda weight),
        per-modality reconstruction MSE over present items, and mean gate weights."""
        from mmsid.quantizers.tokenizer import check_features

        model = self.module.eval()
        t = check_features(x, dim=self.input_dim).to(next(model.parameters()).device)
        xs, mask, _, z_sh, z_sp = model.latents(t)
        out = model(t)
        rec = {
            f"modality{m}": float(
                (((xs[m] - out["recon"][m]) ** 2).sum(-1) * mask[:, m]).sum()
                / mask[:, m].sum().clamp_min(1)
            )
            for m in range(model.M)
        }
        orth = float(model.orthogonality(z_sh, z_sp, mask)) if z_sh and z_sp[0] else float("nan")
        return {
            "orthogonality_abs_cos": orth,
            "reconstruction_mse": rec,
            "gate_mean": {k: v.mean(0).tolist() for k, v in out["gates"].items()},
        }
