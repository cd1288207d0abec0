"""TIGER (Rajput et al., NeurIPS 2023): an encoder-decoder transformer that reads a user's
history as semantic-ID tokens and generates the next item's SID token by token; decoding is a
beam search constrained by the catalogue's SID trie, so every output is a real item.

Architecture (the paper's T5 settings, as defaults): 4 encoder + 4 decoder layers, d_model
128, 6 heads of 64 dims (inner width 384, as T5's ``d_kv``), FFN 1024 with ReLU, dropout 0.1,
pre-RMSNorm. The user id is hashed into 2,000 tokens (TIGER's setting) placed before the
history. Where the paper is silent or T5 differs from a plain transformer, our readings:
  * positions: learned absolute slot embeddings with the history right-aligned (the newest
    item always sits in the last slots), instead of T5's relative position bias;
  * one output head over the concatenated per-level vocabularies, sliced per level (levels
    never share tokens: a level-0 code 5 and a level-1 code 5 are different tokens).

Token layout: 0 = PAD, 1 = BOS (decoder start), 2 .. 2 + user_buckets - 1 = user tokens, then
level ``l``'s codes at ``sid_offset[l] .. sid_offset[l] + V_l - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmsid.retrieval.trie import SIDTrie

PAD, BOS, N_SPECIAL = 0, 1, 2


@dataclass(frozen=True)
class TIGERConfig:
    d_model: int = 128
    n_heads: int = 6
    d_head: int = 64
    d_ff: int = 1024
    enc_layers: int = 4
    dec_layers: int = 4
    dropout: float = 0.1  # on residual branches and embeddings
    # T5 also drops attention probabilities; on CPU that forces SDPA's slow math path and
    # cost a third of the step time, so it is off by default (a setting)
    attn_dropout: float = 0.0
    user_buckets: int = 2000  # 0 = no user token
    max_history: int = 20

    def __post_init__(self) -> None:
        from mmsid.config import check_ranges

        check_ranges(
            self,
            d_model=(1, None),
            n_heads=(1, None),
            d_head=(1, None),
            d_ff=(1, None),
            enc_layers=(1, None),
            dec_layers=(1, None),
            dropout=(0.0, 0.99),
            attn_dropout=(0.0, 0.99),
            user_buckets=(0, None),
            max_history=(1, None),
        )


def attention_math(q, k, v, mask, causal: bool, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh)) v, spelled out. Under bf16 autocast on CPU this is 3x faster
    than SDPA's CPU flash kernel, whose backward pass is slow in bf16 (measured on 256 x 81
    tokens); SDPA is used everywhere else. q (..., T, dh), k/v (..., S, dh)."""
    att = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (..., T, S)
    if mask is not None:
        att = att.masked_fill(~mask, float("-inf"))
    if causal:
        T, S = att.shape[-2:]
        att = att.masked_fill(
            torch.ones(T, S, dtype=torch.bool, device=q.device).triu(1), float("-inf")
        )
    att = F.dropout(att.softmax(-1), p) if p else att.softmax(-1)
    return att @ v


class Attention(nn.Module):
    """Multi-head attention with ``n_heads * d_head`` inner width (T5's d_kv), via SDPA."""

    def __init__(self, cfg: TIGERConfig) -> None:
        super().__init__()
        inner = cfg.n_heads * cfg.d_head
        self.h, self.dh, self.p = cfg.n_heads, cfg.d_head, cfg.attn_dropout
        self.q = nn.Linear(cfg.d_model, inner, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * inner, bias=False)
        self.o = nn.Linear(inner, cfg.d_model, bias=False)

    def project_kv(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, _ = ctx.shape
        k, v = self.kv(ctx).view(B, S, 2, self.h, self.dh).permute(2, 0, 3, 1, 4)
        return k, v  # each (B, h, S, dh)

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        fold: int = 1,
    ) -> torch.Tensor:
        """x: (B*fold, T, d). kv: keys/values (B, h, S, dh), default from x (self-attention).
        ``fold`` > 1 lets ``fold`` sequences (a user's beams) share one context without
        copying it: their queries are stacked along time, which is exact for attention without
        a mask between queries (cross-attention). mask: (B, 1, 1, S) bool, True = attend."""
        BF, T, _ = x.shape
        q = self.q(x).view(BF, T, self.h, self.dh).transpose(1, 2)  # (B*fold, h, T, dh)
        k, v = self.project_kv(x) if kv is None else kv
        if fold > 1:
            q = q.view(BF // fold, fold, self.h, T, self.dh).transpose(1, 2)
            q = q.reshape(BF // fold, self.h, fold * T, self.dh)  # (B, h, fold*T, dh)
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            y = attention_math(q, k, v, mask, causal, self.p if self.training else 0.0)
        else:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                is_causal=causal,
                dropout_p=self.p if self.training else 0.0,
            )
        if fold > 1:
            y = y.view(BF // fold, self.h, fold, T, self.dh).transpose(1, 2)
        y = y.reshape(BF, self.h, T, self.dh).transpose(1, 2).reshape(BF, T, self.h * self.dh)
        return self.o(y)


class FeedForward(nn.Sequential):
    def __init__(self, cfg: TIGERConfig) -> None:
        super().__init__(
            nn.Linear(cfg.d_model, cfg.d_ff),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.d_ff, cfg.d_model),
        )


class EncoderLayer(nn.Module):
    def __init__(self, cfg: TIGERConfig) -> None:
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(cfg.d_model), nn.RMSNorm(cfg.d_model)
        self.attn, self.ff, self.drop = Attention(cfg), FeedForward(cfg), nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.n1(x), mask=mask))
        return x + self.drop(self.ff(self.n2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TIGERConfig) -> None:
        super().__init__()
        self.n1, self.n2, self.n3 = (nn.RMSNorm(cfg.d_model) for _ in range(3))
        self.self_attn, self.cross = Attention(cfg), Attention(cfg)
        self.ff, self.drop = FeedForward(cfg), nn.Dropout(cfg.dropout)

    def forward(self, x, mem_kv, mem_mask, fold: int = 1) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.n1(x), causal=True))
        x = x + self.drop(self.cross(self.n2(x), mem_kv, mask=mem_mask, fold=fold))
        return x + self.drop(self.ff(self.n3(x)))


class TIGER(nn.Module):
    """Contract (shared with SASRec): ``loss(batch)``, ``recommend(batch, k)``.

    Args:
        item_sids: (n_items, D) each item's unique SID (codes then collision index).
        vocab_sizes: tokens per level (len D).
    """

    def __init__(self, item_sids: np.ndarray, vocab_sizes, cfg: TIGERConfig = TIGERConfig()):
        super().__init__()
        self.cfg = cfg
        sids = torch.as_tensor(np.asarray(item_sids), dtype=torch.long)
        self.D = sids.shape[1]
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        off = N_SPECIAL + cfg.user_buckets + np.r_[0, np.cumsum(self.vocab_sizes)[:-1]]
        self.register_buffer("sid_offset", torch.as_tensor(off, dtype=torch.long), False)
        # item -> its D global tokens; the extra last row (item -1) is all PAD
        tokens = torch.cat([sids + self.sid_offset, torch.full((1, self.D), PAD)])
        self.register_buffer("item_tokens", tokens, persistent=False)  # (n_items + 1, D)
        self.trie = SIDTrie.from_sids(sids.numpy(), vocab_sizes=self.vocab_sizes)
        n_tok = N_SPECIAL + cfg.user_buckets + sum(self.vocab_sizes)
        d = cfg.d_model
        self.tok = nn.Embedding(n_tok, d, padding_idx=PAD)
        self.enc_pos = nn.Embedding(1 + cfg.max_history * self.D, d)
        self.dec_pos = nn.Embedding(self.D, d)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        self.enc_norm, self.dec_norm = nn.RMSNorm(d), nn.RMSNorm(d)
        self.head = nn.Linear(d, sum(self.vocab_sizes), bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def _apply(self, fn, *args, **kwargs):  # keep the trie on the module's device
        out = super()._apply(fn, *args, **kwargs)
        self.trie = self.trie.to(self.item_tokens.device)
        return out

    # ---- encoder ----------------------------------------------------------------------
    def encoder_tokens(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(B,) users and (B, H) histories (oldest first, -1 padded at the end) -> (B, 1 + H*D)
        tokens: the user token, then the history right-aligned and flattened level by level.
        Leading slots that are padding in every row are dropped (positions keep their slot)."""
        B, H = history.shape
        n = (history >= 0).sum(1, keepdim=True)  # (B, 1)
        src = torch.arange(H, device=history.device) - (H - n)  # (B, H), <0 = pad slot
        right = torch.where(src >= 0, history.gather(1, src.clamp(min=0)), -1)  # (B, H)
        hist_tok = self.item_tokens[right].reshape(B, H * self.D)  # -1 -> last row (PAD)
        if self.cfg.user_buckets:
            utok = N_SPECIAL + user % self.cfg.user_buckets
        else:
            utok = torch.full_like(user, PAD)
        keep = int(n.max()) * self.D
        tokens = torch.cat([utok[:, None], hist_tok[:, H * self.D - keep :]], 1)
        return tokens  # (B, 1 + keep)

    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, S) -> memory (B, S, d) and key mask (B, 1, 1, S)."""
        B, S = tokens.shape
        full = 1 + self.cfg.max_history * self.D
        pos = torch.cat(
            [
                torch.zeros(1, dtype=torch.long, device=tokens.device),
                torch.arange(full - S + 1, full, device=tokens.device),
            ]
        )  # (S,)
        mask = (tokens != PAD)[:, None, None, :]  # (B, 1, 1, S)
        mask[..., 0] = True  # the user slot is always attendable (no all-masked rows)
        x = self.drop(self.tok(tokens) + self.enc_pos(pos))
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x), mask

    # ---- decoder ----------------------------------------------------------------------
    def decode(self, prefix: torch.Tensor, mem_kv: list, mem_mask: torch.Tensor, fold: int = 1):
        """prefix (B*fold, T) level tokens (global ids) starting with BOS -> (B*fold, T, d)."""
        T = prefix.shape[1]
        x = self.drop(self.tok(prefix) + self.dec_pos.weight[:T])
        for layer, kv in zip(self.decoder, mem_kv):
            x = layer(x, kv, mem_mask, fold)
        return self.dec_norm(x)

    def level_logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """(..., d) -> (..., V_level) logits over this level's codes."""
        lo = int(self.sid_offset[level]) - int(self.sid_offset[0])
        w = self.head.weight[lo : lo + self.vocab_sizes[level]]
        return h @ w.T

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Teacher-forced cross-entropy of the target's SID, averaged over levels."""
        mem, mask = self.encode(self.encoder_tokens(batch["user"], batch["history"]))
        kv = [layer.cross.project_kv(mem) for layer in self.decoder]
        tgt = self.item_tokens[batch["target"]]  # (B, D) global tokens
        prefix = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], 1)  # (B, D)
        h = self.decode(prefix, kv, mask)  # (B, D, d)
        codes = tgt - self.sid_offset  # (B, D) per-level codes
        return (
            sum(F.cross_entropy(self.level_logits(h[:, t], t), codes[:, t]) for t in range(self.D))
            / self.D
        )

    # ---- constrained beam search ------------------------------------------------------
    @torch.no_grad()
    def recommend(
        self, batch: dict[str, torch.Tensor], k: int, *, beam: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items per user by trie-constrained beam search (beam >= k, default k).

        Returns items (U, k) (-1 where fewer than k valid SIDs exist) and their summed
        log-probabilities (U, k), best first."""
        beam = max(beam or k, k)
        mem, mask = self.encode(self.encoder_tokens(batch["user"], batch["history"]))
        kv = [layer.cross.project_kv(mem) for layer in self.decoder]  # cached once per user
        U, dev = mem.shape[0], mem.device
        node = torch.zeros(U, 1, dtype=torch.long, device=dev)  # (U, b): trie node per beam
        score = torch.zeros(U, 1, device=dev)
        prefix = torch.full((U, 1, 1), BOS, dtype=torch.long, device=dev)  # (U, b, t+1)
        for t in range(self.D):
            b = prefix.shape[1]
            h = self.decode(prefix.reshape(U * b, t + 1), kv, mask, fold=b)[:, -1]
            logp = F.log_softmax(self.level_logits(h, t), -1).view(U, b, -1)  # (U, b, V_t)
            child = self.trie.allowed(node, t)  # (U, b, V_t)
            cand = (score[..., None] + logp).masked_fill(child < 0, float("-inf"))
            V = cand.shape[-1]
            score, idx = cand.view(U, b * V).topk(min(beam, b * V), dim=1)  # (U, b')
            parent, tok = idx // V, idx % V
            node = child.reshape(U, b * V).gather(1, idx).clamp(min=0)  # dead beams -> root
            prefix = torch.cat(
                [
                    prefix.gather(1, parent[..., None].expand(-1, -1, t + 1)),
                    (tok + self.sid_offset[t])[..., None],
                ],
                2,
            )
        items = self.trie.leaf_item[node]  # (U, beam)
        items = items.masked_fill(~torch.isfinite(score), -1)
        if items.shape[1] < k:  # a tiny catalogue ran out of beams: pad the lists
            pad = k - items.shape[1]
            items = F.pad(items, (0, pad), value=-1)
            score = F.pad(score, (0, pad), value=float("-inf"))
        return items[:, :k], score[:, :k]


@torch.no_grad()
def recommend_reference(
    model: TIGER, user: int, history: torch.Tensor, k: int, beam: int, sids: np.ndarray
) -> list[tuple[int, float]]:
    """Slow reference for ``TIGER.recommend``: one user, a Python loop over beams, a
    catalogue scan for the allowed tokens (``reference_allowed``). Returns [(item, score)]."""
    from mmsid.retrieval.trie import reference_allowed

    mem, mask = model.encode(model.encoder_tokens(torch.tensor([user]), history[None]))
    kv = [layer.cross.project_kv(mem) for layer in model.decoder]
    beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    for t in range(model.D):
        cand = []
        for codes, score in beams:
            tokens = [BOS] + [c + int(model.sid_offset[i]) for i, c in enumerate(codes)]
            h = model.decode(torch.tensor([tokens]), kv, mask)[0, -1]
            logp = F.log_softmax(model.level_logits(h, t), -1)
            cand += [(codes + (c,), score + float(logp[c])) for c in reference_allowed(sids, codes)]
        beams = sorted(cand, key=lambda b: -b[1])[:beam]
    item_of = {tuple(s): i for i, s in enumerate(np.asarray(sids).tolist())}
    return [(item_of[codes], score) for codes, score in beams[:k]]
