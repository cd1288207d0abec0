"""MMQ — Multimodal Mixture-of-Quantization (arXiv 2508.15281), our reading of it
(../shared/spec/METHODS.md, section MMQ; every choice below is a config field). This file holds
the model; mmsid.quantizers.mmq_tokenizer trains it (stage 1) and fine-tunes it (stage 2).

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
    routes each item over the group's experts: the decoder of modality m reconstructs x^m
    from [gated shared ; gated specific of m]. With 2+ experts per group two terms keep the
    routing a mixture (the paper names neither; both are settings, our choice):
    ``gate_balance`` * (n * sum_e mean_b(g_be)^2 - 1), Switch-Transformer's load balance for
    soft gates (0 when the batch uses every expert equally, n - 1 when it uses one), and
    ``gate_sharpness`` * mean_b H(g_b) / log n (1 for a uniform gate, 0 for a one-hot one),
    so that each item is routed rather than averaged. With one expert per group every gate
    is identically 1 (the ablation ``one-expert``);
  * loss = sum_m mask_m ||x^m - D_m(.)||^2 + sum_e (codebook + beta commitment)
    + lambda_orth * mean |cos(z_shared, z_specific)| (over shared/specific pairs of an item
    whose modality is present; ``orth_between_specific`` adds pairs of specific experts of
    different modalities) + the gate terms; k-means codebook init on the first batch,
    dead-code restart.

With one modality, no shared experts and one specific expert this is exactly an RQ-VAE
(tested by loading an RQ-VAE's weights and comparing outputs).

Stage 2, behavior-aware fine-tuning (``finetune``): soft indexing (``tau``: softmax over
negative squared distances; forward value = hard code, gradient = soft assignment) lets an
in-batch contrastive loss between items that follow each other in *training* sequences reach
experts, gates and codebooks, while the reconstruction and quantization losses stay on. Hard
SIDs are re-assigned afterwards; the share of items whose SID changed is recorded, beside a
control fine-tuned the same way with ``behavior_weight`` 0 (mmsid.tokenize_mmq).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmsid.quantizers.residual import ResidualQuantizer, ResidualQuantizerConfig
from mmsid.quantizers.rqvae import mlp


@dataclass(frozen=True)
class MMQConfig:
    modality_dims: tuple[int, ...] = ()  # split of the input into modalities; () = one
    n_shared: int = 2
    n_specific: int = 2  # per modality
    shared_levels: int = 1  # residual levels of each shared expert's quantizer
    specific_levels: int = 1
    order: str = "shared-first"  # or "specific-first"
    codebook_size: int = 256
    latent_dim: int = 32
    hidden: tuple[int, ...] = (512, 256, 128)  # capped by the input width, as RQ-VAE
    beta: float = 0.25
    lambda_orth: float = 0.1
    orth_between_specific: bool = False
    # gate terms, 0.1 each: items are routed (mean gate entropy .15-.75) over both experts of
    # every group (mass .44-.56) on the three data sets (benchmarks/results/mmq_health.md). The
    # balance weight must not be below the sharpness weight: sending every item to one expert
    # costs gate_balance * (n - 1) and saves gate_sharpness * 1, so a weaker balance term makes
    # collapse the cheaper way to sharp gates. On amazon-beauty's two text views (title,
    # categories) 0.1 makes every gate one-hot; the main job sets 0.01 there (README, "Weights
    # between 0 and 0.1"; benchmarks/results/mmq_routing_sharpness_small.md for the others)
    gate_balance: float = 0.1  # load balance of each group's gate over the batch
    gate_sharpness: float = 0.1  # weight of the mean normalised gate entropy per item
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
    finetune_restart: bool = False  # dead-code restart in stage 2 too (after each epoch)
    behavior_weight: float = 1.0
    behavior_temperature: float = 0.1  # InfoNCE temperature
    levels: int = 0  # derived from the expert layout; kept for the tokenizer contract


def gate_balance(g: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """n * sum_e u_e^2 - 1 for the batch's mean gate u over the items present: 0 when every
    expert gets the same mass, n - 1 when one expert gets all of it, 0 when no item of the
    batch has the group's input. g (B, n), present (B,)."""
    n = g.shape[1]
    usage = (g * present[:, None]).sum(0) / present.sum().clamp_min(1.0)  # (n,)
    return (n * usage.pow(2).sum() - 1.0) * (present.sum() > 0)


def gate_entropy(g: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean over the items present of H(g_b) / log n: 1 for uniform gates, 0 for one-hot."""
    h = -(g * g.clamp_min(1e-12).log()).sum(1) / math.log(g.shape[1])  # (B,)
    return (h * present).sum() / present.sum().clamp_min(1.0)


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

    def forward(self, x: torch.Tensor, *, tau: float = 0.0, batch_terms: bool = True) -> dict:
        """x (B, D) -> {"codes" (B, L), "losses" {...}, "q" (B, n_experts * d) quantized
        latents, "gates" {group: (B, n)}, "present" {group: (B,)}, "recon" [(B, d_m)],
        "latents" (z_sh, z_sp, mask) as :meth:`latents`}. ``batch_terms=False`` leaves
        :meth:`batch_terms` out of "losses" (a multi-process step computes them over the global
        batch instead)."""
        xs, mask, s_in, z_sh, z_sp = self.latents(x)
        out_sh = [q(z, tau=tau) for q, z in zip(self.q_shared, z_sh)]
        out_sp = [
            [q(z, tau=tau) for q, z in zip(self.q_specific[m], z_sp[m])] for m in range(self.M)
        ]
        gates, present = {}, {}  # per group: (B, n) gate, (B,) items it routes
        h_sh = None
        if self.cfg.n_shared:
            g = torch.softmax(self.gate_shared(s_in), -1)  # (B, n_shared)
            gates["shared"], present["shared"] = g, mask.amax(1)
            h_sh = sum(g[:, e, None] * o.quantized for e, o in enumerate(out_sh))
        recon, rec = [], x.new_zeros(())
        for m in range(self.M):
            parts = [h_sh] if h_sh is not None else []
            if self.cfg.n_specific:
                g = torch.softmax(self.gate_specific[m](xs[m]), -1)  # (B, n_specific)
                gates[f"modality{m}"], present[f"modality{m}"] = g, mask[:, m]
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
        if batch_terms:
            losses |= self.batch_terms(gates, present, z_sh, z_sp, mask)
        codes = self.group_codes(
            [o.codes for o in out_sh], [[o.codes for o in per_m] for per_m in out_sp]
        )
        q = torch.cat([o.quantized for o in all_out], 1)
        return {
            "codes": codes,
            "losses": losses,
            "q": q,
            "gates": gates,
            "present": present,
            "recon": recon,
            "latents": (z_sh, z_sp, mask),
        }

    def batch_terms(self, gates, present, z_sh, z_sp, mask) -> dict[str, torch.Tensor]:
        """The loss terms of a batch that are not means over its rows: orthogonality (a mean
        over the items present), each routed group's load balance and gate sharpness. The
        tokenizer's training step recomputes them over the global batch in a multi-process
        run (mmsid.quantizers.loop's ``global_terms``). gates / present: {group: (B, n) /
        (B,)}; z_sh [(B, d)]; z_sp [[(B, d)]] per modality; mask (B, M)."""
        cfg, terms = self.cfg, {}
        if cfg.lambda_orth > 0:
            terms["orthogonality"] = cfg.lambda_orth * self.orthogonality(z_sh, z_sp, mask)
        routed = [k for k, g in gates.items() if g.shape[1] > 1]
        if routed and cfg.gate_balance > 0:
            parts = [gate_balance(gates[k], present[k]) for k in routed]
            terms["gate_balance"] = cfg.gate_balance * sum(parts)
        if routed and cfg.gate_sharpness > 0:
            parts = [gate_entropy(gates[k], present[k]) for k in routed]
            terms["gate_entropy"] = cfg.gate_sharpness * sum(parts)
        return terms

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

    def experts(self) -> list[tuple[str, int, slice]]:
        """(group, expert index, its positions in the SID) for every expert, in SID order;
        groups are ``shared`` and ``modality<m>``."""
        cfg = self.cfg
        shared = [("shared", e, cfg.shared_levels) for e in range(cfg.n_shared)]
        specific = [
            (f"modality{m}", e, cfg.specific_levels)
            for m in range(self.M)
            for e in range(cfg.n_specific)
        ]
        out, at = [], 0
        for group, e, levels in (
            shared + specific if cfg.order == "shared-first" else (specific + shared)
        ):
            out.append((group, e, slice(at, at + levels)))
            at += levels
        return out

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
