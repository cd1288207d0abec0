"""MCCA — Multi-Codebook Cross-Attention (Wang et al., CIKM 2025, arXiv 2508.20359).

Every SID set z (one per modality, plus the modal-joint set) has one table per codebook level;
an item's embedding for set z is the sum over levels, e^z_i = sum_j E^z_j[id_ij]. Item ids have
their own table e^r. The target is represented by its joint-SID embedding e^o_t and its id
embedding e^r_t. The joint embedding of the target is a *shared query* over every set's history
(this is the cross-codebook part: text and audio histories are read through the joint code):

    h^z_u = sum_j a_z([e^z_j ; e^o_t]) e^z_j          for every SID set z
    h^r_u = sum_j a_r([e^r_j ; e^r_t]) e^r_j          id branch
    logit = MLP([h^z_u for all z ; h^r_u ; e^r_t ; e^o_t])

a(.) is a small feed-forward scorer per branch, DIN-style (no softmax), padded positions get
weight 0. Reading: one scorer per SID set (the paper writes a(.) without saying whether it is
shared); ``shared_scorer=True`` shares one across the SID sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmsid.ranking.layers import SIDEmbedding, TargetAttention, grow_catalogue, mlp


@dataclass(frozen=True)
class MCCAConfig:
    dim: int = 64  # d' in the paper
    attention_hidden: tuple[int, ...] = (80, 40)
    mlp_hidden: tuple[int, ...] = (200, 80)
    shared_scorer: bool = False


class MCCA(nn.Module):
    def __init__(
        self,
        n_items: int,
        sids: dict[str, np.ndarray],
        *,
        joint: str,
        codebook_size: int = 256,
        cfg: MCCAConfig = MCCAConfig(),
    ) -> None:
        """sids: {set name: (n_items, L) codes}, including the modal-joint set named ``joint``."""
        super().__init__()
        if joint not in sids:
            raise ValueError(f"MCCA needs the modal-joint SID set '{joint}' among {list(sids)}")
        self.n_items, self.joint = n_items, joint
        self.pad = n_items  # the padding index (the catalogue's size after set_catalogue)
        self.names = list(sids)
        self.sid = nn.ModuleDict(
            {k: SIDEmbedding(v, codebook_size, cfg.dim) for k, v in sids.items()}
        )
        self.item = nn.Embedding(n_items + 1, cfg.dim, padding_idx=n_items)
        nn.init.normal_(self.item.weight, std=0.05)
        with torch.no_grad():
            self.item.weight[n_items].zero_()
        d = cfg.dim
        if cfg.shared_scorer:
            shared = TargetAttention(d, d, hidden=cfg.attention_hidden, mode="concat")
            self.att = nn.ModuleDict({k: shared for k in self.names})
        else:
            self.att = nn.ModuleDict(
                {
                    k: TargetAttention(d, d, hidden=cfg.attention_hidden, mode="concat")
                    for k in self.names
                }
            )
        self.att_id = TargetAttention(d, d, hidden=cfg.attention_hidden, mode="concat")
        self.out = mlp([(len(self.names) + 3) * d, *cfg.mlp_hidden, 1])

    def set_catalogue(self, codes: dict[str, np.ndarray]) -> None:
        """Score a catalogue grown after training ({set: (N', L) codes}, the first ``n_items``
        rows the trained items'): an added item has no id embedding (the zero padding row, as
        in DIN.set_catalogue) and its SID embeddings from its codes."""
        self.pad = grow_catalogue(self.sid, self.n_items, codes)

    def _ids(self, items: torch.Tensor) -> torch.Tensor:
        """(...) -> (..., d) id embeddings; items added after training and padding: zero."""
        return self.item(items.clamp(max=self.n_items))

    def forward(self, batch: dict[str, torch.Tensor], *, return_weights: bool = False):
        hist = batch["history"]  # (B, H)
        mask = hist >= 0
        h_items = torch.where(mask, hist, self.pad)  # padding row
        m = mask.float()
        target = batch["item"]  # (B,)
        e_o = self.sid[self.joint](target)  # (B, d) joint-SID embedding of the target
        e_r = self._ids(target)  # (B, d)
        pooled, weights = [], {}
        for z in self.names:
            h_z, w = self.att[z](self.sid[z](h_items), e_o, m)  # (B, d), (B, H)
            pooled.append(h_z)
            weights[z] = w
        h_r, w = self.att_id(self._ids(h_items), e_r, m)
        weights["id"] = w
        logit = self.out(torch.cat([*pooled, h_r, e_r, e_o], dim=-1)).squeeze(-1)  # (B,)
        return (logit, weights) if return_weights else logit

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(batch), batch["label"])

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self(batch))
