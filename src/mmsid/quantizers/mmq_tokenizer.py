"""Training MMQ (mmsid.quantizers.mmq): stage 1 over the catalogue, stage 2 (behavior-aware
fine-tuning through soft indexing) over pairs of items that follow each other in training
sequences, the control twin of stage 2, and the per-expert report (gate mass and routing,
code utilization and perplexity, orthogonality, reconstruction)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmsid import distributed
from mmsid.eval.codebook import perplexity, utilization
from mmsid.quantizers.loop import fit_epochs, init_rows
from mmsid.quantizers.mmq import MMQ, MMQConfig, gate_entropy, sid_length
from mmsid.quantizers.rows import Rows, batch_reader
from mmsid.quantizers.tokenizer import Tokenizer, check_features

# MMQ's loss terms that are not means over a batch's rows (MMQ.batch_terms): the training loop
# weights them as terms of the global batch (mmsid.quantizers.loop, ``global_terms``)
BATCH_TERMS = ("orthogonality", "gate_balance", "gate_entropy")


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
            if stage == 2:  # rows of the pairs: restart on the items they hold
                rows = torch.unique(pairs[rows].reshape(-1))
            return sum(q.restart_dead_codes(z) for q, z in model.quantizers_and_latents(get(rows)))

        restarts = cfg.dead_code_threshold > 0 and (stage == 1 or cfg.finetune_restart)

        def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
            if stage == 1:
                return self._losses(get(idx))[0]
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
            restart=restart if restarts else None,
            stage=stage,
            global_terms=BATCH_TERMS + (("behavior",) if stage == 2 else ()),
            device=device,
            checkpoint=checkpoint,
            desc=f"mmq stage {stage}",
            progress=progress,
        )

    def _losses(self, x: torch.Tensor, *, tau: float = 0.0) -> tuple[dict, dict]:
        """(loss terms, model output) of one training step's rows. In a multi-process run
        the batch-level terms (MMQ.batch_terms) are recomputed over the global batch: every
        rank gathers gates, presence, latents and masks (mmsid.distributed.gather_live, its
        own rows live), so they equal one process's and the loop weights them as global
        terms. A rank whose part of the batch is empty returns those terms only."""
        model, active = self.module, distributed.context().active
        out = model(x, tau=tau, batch_terms=not active)
        losses = dict(out["losses"]) if len(x) else {}
        if active:  # one gather of every (B, k) input, side by side
            z_sh, z_sp, mask = out["latents"]
            gates, present = out["gates"], out["present"]
            parts = [*gates.values(), *(p[:, None] for p in present.values()), *z_sh]
            parts += [z for per_m in z_sp for z in per_m] + [mask]
            cols = distributed.gather_live(torch.cat(parts, 1))  # (B_global, sum of k)
            it = iter(torch.split(cols, [t.shape[1] for t in parts], 1))
            g = {k: next(it) for k in gates}
            p = {k: next(it)[:, 0] for k in present}
            sh = [next(it) for _ in z_sh]
            sp = [[next(it) for _ in per_m] for per_m in z_sp]
            losses |= model.batch_terms(g, p, sh, sp, next(it))
        return losses, out

    # ---- stage 2 --------------------------------------------------------------------------
    def _stage2_losses(self, get, pair: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction + quantization losses on the batch's items, plus a symmetric in-batch
        InfoNCE between items that follow each other in training sequences; soft indexing
        carries its gradient into experts and codebooks.

        In a multi-process run the in-batch negatives are the whole global batch's: every
        rank gathers the pairs' embeddings (mmsid.distributed.gather_live) and computes the
        global batch's InfoNCE, with gradients through its own rows (a ``global_terms`` term
        of the loop), so N processes fine-tune with one process's loss (as :meth:`_losses`'s
        batch-level terms)."""
        cfg, model = self.cfg, self.module
        B = pair.shape[0]
        losses, out = self._losses(get(pair.reshape(-1)), tau=cfg.tau)  # rows (2B, ...)
        e = F.normalize(model.behavior(out["q"]), dim=-1)  # (2B, d)
        e = distributed.gather_live(e.view(B, 2, e.shape[-1]))  # (B_global, 2, d)
        a, b = e[:, 0], e[:, 1]
        logits = a @ b.T / cfg.behavior_temperature  # (B_global, B_global)
        target = torch.arange(len(a), device=logits.device)
        nce = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        return {**losses, "behavior": cfg.behavior_weight * nce}

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

    def control(self) -> MMQTokenizer:
        """A copy of this tokenizer whose stage 2 has no behavior term (``behavior_weight`` 0),
        the same epochs, pairs and shuffles otherwise: fine-tuning it separates what behavior
        changes from what continued training changes."""
        twin = copy.deepcopy(self)
        twin.cfg = dataclasses.replace(self.cfg, behavior_weight=0.0)
        return twin

    @torch.no_grad()
    def diagnostics(self, x, names: list[str] | None = None) -> dict:
        """Measured orthogonality (mean |cos| shared vs specific, without the lambda weight),
        per-modality reconstruction MSE over present items, each group's gate (mean mass per
        expert, share of items routed to each by their largest weight, mean normalised entropy:
        1 = uniform, 0 = one-hot) and each expert's code utilization and perplexity per level,
        over the items that have the group's input; in a group of 2+ experts also its
        perplexity over the items routed to it and over the others (``perplexity_routed`` /
        ``perplexity_others``, None when there are none). ``names`` label the modality groups."""
        model = self.module.eval()
        t = check_features(x, dim=self.input_dim).to(next(model.parameters()).device)
        xs, mask, _, z_sh, z_sp = model.latents(t)
        out = model(t)
        label = {f"modality{m}": (names[m] if names else f"modality{m}") for m in range(model.M)}
        label["shared"] = "shared"
        rec = {
            label[f"modality{m}"]: float(
                (((xs[m] - out["recon"][m]) ** 2).sum(-1) * mask[:, m]).sum()
                / mask[:, m].sum().clamp_min(1)
            )
            for m in range(model.M)
        }
        orth = float(model.orthogonality(z_sh, z_sp, mask)) if z_sh and z_sp[0] else float("nan")
        gates = {}
        for group, g in out["gates"].items():
            on = out["present"][group] > 0
            gates[label[group]] = {
                "mass": g[on].mean(0).tolist(),
                "routed_share": torch.bincount(g[on].argmax(1), minlength=g.shape[1])
                .div(max(1, int(on.sum())))
                .tolist(),
                "entropy": float(gate_entropy(g, out["present"][group])) if g.shape[1] > 1 else 0.0,
            }
        codes = out["codes"].cpu().numpy()
        K = self.cfg.codebook_size
        experts = []
        for group, e, pos in model.experts():
            on = (out["present"][group] > 0).cpu().numpy() if group in out["present"] else None
            c = codes[on if on is not None else slice(None), pos]
            row = {
                "group": label[group],
                "expert": e,
                "positions": [pos.start, pos.stop],
                "gate_mass": gates[label[group]]["mass"][e] if label[group] in gates else 1.0,
                "utilization": utilization(c, K),
                "perplexity": perplexity(c, K),
            }
            g = out["gates"].get(group)
            if g is not None and g.shape[1] > 1:
                # the expert's codes over the items its gate routes to it (largest weight) and
                # over the others: with one-hot gates the others get almost no reconstruction
                # signal through this expert, so its code for them can carry little content
                mine = (g.argmax(1) == e).cpu().numpy()
                routed, others = c[mine[on]], c[~mine[on]]
                row["perplexity_routed"] = perplexity(routed, K) if len(routed) else None
                row["perplexity_others"] = perplexity(others, K) if len(others) else None
            experts.append(row)
        return {
            "orthogonality_abs_cos": orth,
            "reconstruction_mse": rec,
            "gates": gates,
            "experts": experts,
            "min_expert_utilization": min(min(x["utilization"]) for x in experts),
        }
