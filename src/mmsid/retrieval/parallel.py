"""Parallel semantic-ID retrieval (after RPG, Hou et al., KDD 2025): one causal pass over a
user's items predicts every code of the next item at once; an item's score is the mean of its
codes' log-probabilities, so the whole catalogue is scored exactly, new items included.

For item ``i`` with codes ``c_i = (c_i1 .. c_im)`` (m parallel codes, e.g. OPQ's 32, or any
SID table's levels) and code embeddings ``E_j`` (K, d) per code position ``j``:

    x_t        = mean_j E_j[c_{s_t} j] (+ pos_t)          input at position t   (B, T, d)
    h_t        = CausalTransformer(x)_t                                          (B, T, d)
    g_tj       = h_t + silu(W_j h_t + b_j)                one residual head per code (B, T, m, d)
    logit_tjk  = cos(g_tj, E_j[k]) / tau                                          (B, T, m, K)
    score_t(i) = (1/m) sum_j log_softmax(logit_tj)[c_ij]  exact, for every catalogue item
    loss       = mean_t CE_i(m score_t(i), s_{t+1})       over trainable items (loss="item";
                                                          or S drawn ones + the target)
           or  mean_{t, j} CE(logit_tj, c_{s_{t+1}} j)   each code on its own (loss="code", RPG's)
    every position of a sequence is supervised in one pass

Public facts behind the design (RPG's paper and code, read, not copied): the input is the
mean of the item's code embeddings (``input="sum"`` is a setting); GPT-2-style decoder with
2 layers, 4 heads; cosine logits with a temperature; the output compares against the same code
embeddings as the input (``tie=True``: one token table). RPG's size and regularization (width
448, FFN 1024, dropout 0.5, temperature 0.03) are the preset ``RPG``; the defaults are the
settings the committed parallel-sid figures were measured with (width 256, FFN 512, dropout
0.2, temperature 0.07, or 0.14 where a table says so; ``mmsid run`` uses them too): in
development runs on amazon-beauty's validation RPG's dropout and temperature trained far
slower. Each code's head is one residual block, ``h + silu(W h + b)`` with ``W`` starting at
zero (``head="linear"``; ``head="mlp"``, ``h + W2 gelu(W1 h + b1) + b2``, is our earlier
reading: twice the head's cost, kept as a setting). Choices of ours, each a setting:
pre-LayerNorm blocks (GPT-2's), learned absolute positions with the history
left-aligned (as SASRec here), an item-id embedding added to the input (``item_embedding``,
off: it cannot serve new items), and the training loss. RPG trains each code position's
cross-entropy on its own (``loss="code"``); we train the score the evaluation ranks by, a
softmax over the catalogue's trainable items (``loss="item"``, the default): it won on
validation on ml100k-mm (R@10 +.081, where the per-code loss stays below popularity) and
amazon-beauty (+.018), 3 seeds, paired (``benchmarks/results/parallel_loss.md``); on ml100k-mm's
cold items the per-code loss did better.
RPG decodes with a graph over SIDs; exact scoring (``score``) is the default here and the
reference any approximate decoder must match. RPG's graph-constrained decoding is the setting
``decode="graph"`` (mmsid.retrieval.graph), measured against exact scoring by
``benchmarks/bench_graph_decode.py``.

Items that share a full SID get the same score (they tie); no collision level is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmsid.retrieval.catalogue_loss import CatalogueLSE
from mmsid.retrieval.encoder import CausalEncoder, next_item_pairs, next_item_units

# RPG's published size and regularization: ParallelSIDConfig(**RPG), or on the command line
# --set parallel.d_model=448 --set parallel.d_ff=1024 --set parallel.dropout=0.5
# --set parallel.temperature=0.03
RPG = {"d_model": 448, "d_ff": 1024, "dropout": 0.5, "temperature": 0.03}


@dataclass(frozen=True)
class ParallelSIDConfig:
    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 512
    dropout: float = 0.2
    temperature: float = 0.07
    input: str = "mean"  # how an item's code embeddings make its input: mean | sum
    tie: bool = True  # output logits against the input code embeddings (else separate tables)
    item_embedding: bool = False  # add a per-item id embedding (cannot serve new items)
    head: str = "linear"  # per-code head: linear (RPG's residual block) | mlp (two layers)
    # training loss: "item" (cross-entropy over the catalogue's trainable items of the score
    # the evaluation ranks by, sum_j log p_j(c_ij)) | "code" (RPG's: mean per-code
    # cross-entropy, each code position on its own) | "both" (their sum). "item" won on
    # validation on ml100k-mm and amazon-beauty (benchmarks/results/parallel_loss.md)
    loss: str = "item"
    # items in the item loss's softmax: 0 = every trainable item (exact); S > 0 = S trainable
    # items drawn uniformly without replacement per batch, shared by all its positions, plus
    # each position's target (sampled softmax: the cost per batch falls from N to S items;
    # uniform draws need no log-Q correction; a target drawn as a negative counts once).
    # Evaluation always scores the whole catalogue exactly
    item_negatives: int = 0
    max_history: int = 20
    score_chunk: int = 65536  # catalogue items scored per chunk (memory: B x chunk floats)
    # top-k at recommendation: "exact" (every catalogue item scored; the reference) | "graph"
    # (RPG's graph-constrained decoding, mmsid.retrieval.graph: each item's graph_edges most
    # similar SIDs, graph_beams random starts (at least k), graph_steps rounds; RPG's Beauty
    # settings are the defaults). ``score`` (fusion, the service's scores) stays exact
    decode: str = "exact"
    graph_edges: int = 100
    graph_beams: int = 10
    graph_steps: int = 3
    graph_seed: int = 0

    def __post_init__(self) -> None:
        from mmsid.config import check_ranges
        from mmsid.errors import ConfigError

        check_ranges(
            self,
            d_model=(1, None),
            n_heads=(1, None),
            n_layers=(1, None),
            d_ff=(1, None),
            dropout=(0.0, 0.99),
            temperature=(1e-6, None),
            max_history=(1, None),
            score_chunk=(1, None),
            item_negatives=(0, None),
            graph_edges=(1, None),
            graph_beams=(1, None),
            graph_steps=(1, None),
        )
        if self.d_model % self.n_heads:
            raise ConfigError(f"parallel.d_model {self.d_model} is not a multiple of n_heads")
        if self.input not in ("mean", "sum"):
            raise ConfigError(f"parallel.input '{self.input}': choose mean or sum")
        if self.head not in ("linear", "mlp"):
            raise ConfigError(f"parallel.head '{self.head}': choose linear or mlp")
        if self.loss not in ("code", "item", "both"):
            raise ConfigError(f"parallel.loss '{self.loss}': choose code, item or both")
        if self.decode not in ("exact", "graph"):
            raise ConfigError(f"parallel.decode '{self.decode}': choose exact or graph")


class ParallelSID(nn.Module):
    """Contract (shared with SASRec and TIGER): ``loss(batch)``, ``score(history)``,
    ``recommend(batch, k)``.

    Training batches hold ``seq`` (B, H+1) item ids, oldest first, -1 padded at the end
    (position t predicts item t+1); evaluation batches hold ``history`` (B, H) in the same
    layout. The catalogue is the ``codes`` table (N, m): replace it with :meth:`set_catalogue`
    to score items tokenized after training, with no retraining."""

    def __init__(
        self,
        codes: np.ndarray,
        codebook_size: int,
        cfg: ParallelSIDConfig,
        *,
        trainable: np.ndarray | None = None,
    ) -> None:
        """trainable: (N,) bool, the items the item-level loss may score (default all); the
        protocol's cold items are left out, as SASRec leaves them out of its softmax."""
        super().__init__()
        self.cfg, self.K = cfg, int(codebook_size)
        self.m = int(codes.shape[1])
        d = cfg.d_model
        self.register_buffer("codes", torch.as_tensor(codes, dtype=torch.long), persistent=False)
        mask = np.ones(len(codes), bool) if trainable is None else np.asarray(trainable, bool)
        if mask.shape != (len(codes),):
            raise ValueError(f"trainable must be ({len(codes)},) bool, got {mask.shape}")
        self.register_buffer("trainable", torch.as_tensor(mask), persistent=False)
        self.code_emb = nn.Parameter(torch.randn(self.m, self.K, d) * 0.02)  # (m, K, d)
        self.out_emb = None if cfg.tie else nn.Parameter(torch.randn(self.m, self.K, d) * 0.02)
        self.item = nn.Embedding(len(codes) + 1, d) if cfg.item_embedding else None
        self.encoder = CausalEncoder(
            d, cfg.n_heads, cfg.d_ff, cfg.n_layers, cfg.dropout, cfg.max_history, pos_std=0.02
        )  # GPT-2's position scale, as the code embeddings'
        # per-code residual heads, stored stacked so all m run as one batched contraction; each
        # starts as the identity plus a constant (its last weight is zero)
        if cfg.head == "linear":  # h + silu(W1 h + b1); b1 as nn.Linear's default bias
            self.w1 = nn.Parameter(torch.zeros(self.m, d, d))  # (m, d, d)
            self.b1 = nn.Parameter(torch.empty(self.m, d).uniform_(-(d**-0.5), d**-0.5))
        else:  # h + W2 gelu(W1 h + b1) + b2
            self.w1 = nn.Parameter(torch.randn(self.m, d, d) * d**-0.5)
            self.b1 = nn.Parameter(torch.zeros(self.m, d))
            self.w2 = nn.Parameter(torch.zeros(self.m, d, d))
            self.b2 = nn.Parameter(torch.zeros(self.m, d))
        self._graph: tuple[torch.Tensor, torch.Generator] | None = None  # decode="graph"

    def set_catalogue(self, codes: np.ndarray) -> None:
        """Score this (N', m) code table from now on (e.g. the catalogue plus new items)."""
        if codes.shape[1] != self.m or codes.max(initial=0) >= self.K or codes.min(initial=0) < 0:
            raise ValueError(
                f"catalogue codes must be (N, {self.m}) in [0, {self.K}); got shape "
                f"{codes.shape}, range [{codes.min()}, {codes.max()}]"
            )
        self.codes = torch.as_tensor(codes, dtype=torch.long, device=self.code_emb.device)
        keep = self.trainable[: len(codes)]  # items added after training are not trainable
        self.trainable = torch.cat([keep, keep.new_zeros(len(codes) - len(keep))])
        self._graph = None

    def train(self, mode: bool = True) -> ParallelSID:
        self._graph = None  # the weights may change: decode="graph" rebuilds its graph
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._graph = None
        return super().load_state_dict(*args, **kwargs)

    # ---- encoder ---------------------------------------------------------------------------

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """(...) item ids (>= 0) -> (..., d): mean (or sum) of the item's code embeddings."""
        c = self.codes[items]  # (..., m)
        e = self.code_emb[torch.arange(self.m, device=c.device), c]  # (..., m, d)
        x = e.mean(-2) if self.cfg.input == "mean" else e.sum(-2)
        if self.item is not None:
            x = x + self.item(items)
        return x

    def hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, T) items oldest first, -1 padded at the end -> (B, T, d)."""
        pad = seq < 0
        x = self.embed_items(seq.clamp_min(0)).masked_fill(pad[..., None], 0.0)
        return self.encoder(x, pad)

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """(M, d) hidden states -> (M, m, K) per-code log-probabilities."""
        g = torch.einsum("md,jde->mje", h, self.w1) + self.b1  # (M, m, d)
        if self.cfg.head == "linear":
            g = h[:, None] + F.silu(g)
        else:
            g = h[:, None] + torch.einsum("mjd,jde->mje", F.gelu(g), self.w2) + self.b2
        emb = self.code_emb if self.out_emb is None else self.out_emb  # (m, K, d)
        logits = torch.einsum(
            "mjd,jkd->mjk", F.normalize(g, dim=-1), F.normalize(emb, dim=-1)
        )  # (M, m, K)
        return (logits / self.cfg.temperature).log_softmax(-1)

    # ---- training --------------------------------------------------------------------------

    loss_units = staticmethod(next_item_units)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inp, tgt, valid = next_item_pairs(batch["seq"])  # (B, H) each
        keep = int((inp >= 0).sum(1).max())  # batches are bucketed: trim trailing padding
        inp, tgt, valid = inp[:, :keep], tgt[:, :keep], valid[:, :keep]
        h = self.hidden(inp)
        lp = self.log_probs(h[valid])  # (M, m, K)
        tgt = tgt[valid]  # (M,)
        loss = lp.new_zeros(())
        if self.cfg.loss in ("code", "both"):
            loss = loss - lp.gather(2, self.codes[tgt][..., None]).mean()
        if self.cfg.loss in ("item", "both"):
            loss = loss + self.item_loss(lp, tgt)
        return loss

    def item_loss(self, lp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the trainable catalogue items of s(i) = sum_j lp_j[c_ij] (the
        evaluation's ranking score times m). lp (M, m, K), tgt (M,) -> scalar, in fp32.
        :class:`CatalogueLSE` computes the log-normaliser chunk by chunk over items (exact;
        about 4x faster than autograd over the whole (M, N) score matrix on Beauty's 12k
        items); :func:`item_loss_reference` is the plain autograd version it must equal. With
        ``item_negatives`` = S the softmax runs over S sampled trainable items and the target
        (:func:`sampled_item_loss_reference`)."""
        lp = lp.float()
        lpT = lp.permute(1, 2, 0).contiguous()  # (m, K, M): item rows gather fast
        target = lp.gather(2, self.codes[tgt][..., None]).sum((1, 2))  # (M,) s_t(tgt_t)
        neg = self.sample_negatives()
        if neg is None:  # every trainable item (the targets are among them)
            return (CatalogueLSE.apply(lpT, self.codes, self.trainable) - target).mean()
        lse_neg = CatalogueLSE.apply(lpT, self.codes[neg], self.trainable[neg])  # (M,)
        drawn = torch.zeros_like(self.trainable).index_fill_(0, neg, True)
        lse = torch.where(drawn[tgt], lse_neg, torch.logaddexp(lse_neg, target))
        return (lse - target).mean()

    def sample_negatives(self) -> torch.Tensor | None:
        """(S,) distinct trainable items for one batch's sampled softmax, drawn from torch's
        generator (seeded by the training loop, as dropout); None = use every item."""
        S = self.cfg.item_negatives
        if not S:  # the default: no per-batch work
            return None
        pool = self.trainable.nonzero().squeeze(1)  # (N_train,)
        if S >= len(pool):
            return None
        return pool[torch.randperm(len(pool), device=pool.device)[:S]]

    # ---- scoring ---------------------------------------------------------------------------

    def chunk_scores(self, lp: torch.Tensor):
        """(B, m, K) log-probabilities -> (start, (B, n) scores) per chunk of ``score_chunk``
        catalogue items: the mean code log-probability by one gather-sum (memory B x n x m)."""
        B = lp.shape[0]
        flat = lp.reshape(B, self.m * self.K)  # (B, m K)
        offs = torch.arange(self.m, device=lp.device) * self.K  # (m,)
        for s in range(0, len(self.codes), self.cfg.score_chunk):
            idx = (self.codes[s : s + self.cfg.score_chunk] + offs).reshape(-1)  # (n m,)
            yield s, flat[:, idx].view(B, -1, self.m).mean(-1)

    def score_codes(self, lp: torch.Tensor) -> torch.Tensor:
        """(B, m, K) log-probabilities -> (B, N) mean code log-probability of every catalogue
        item."""
        out = torch.empty(lp.shape[0], len(self.codes), dtype=lp.dtype, device=lp.device)
        for s, sc in self.chunk_scores(lp):
            out[:, s : s + sc.shape[1]] = sc
        return out

    def last_log_probs(self, history: torch.Tensor) -> torch.Tensor:
        """(B, H) histories -> (B, m, K) code log-probabilities of each user's next item."""
        n = (history >= 0).sum(1)  # (B,)
        h = self.hidden(history[:, : int(n.max())])
        last = h[torch.arange(len(n), device=h.device), n - 1]  # (B, d)
        return self.log_probs(last)

    @torch.no_grad()
    def score(self, history: torch.Tensor) -> torch.Tensor:
        """(B, H) histories -> (B, N) scores of every catalogue item (mean log-prob)."""
        return self.score_codes(self.last_log_probs(history))

    def top_codes(self, lp: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, m, K) log-probabilities -> the top ``k`` catalogue items (B, k) and their scores,
        as ``score_codes(lp).topk(k)`` but chunk by chunk, keeping a running top-k: memory
        B x chunk, never B x N, so a catalogue of millions of items fits. A catalogue of one
        chunk takes the plain path (the same tie order as ``topk`` over all items)."""
        N, chunk = len(self.codes), self.cfg.score_chunk
        if N <= chunk:
            top = self.score_codes(lp).topk(k, dim=1)
            return top.indices, top.values
        best_v = lp.new_empty(lp.shape[0], 0)
        best_i = torch.empty(lp.shape[0], 0, dtype=torch.long, device=lp.device)
        for s, sc in self.chunk_scores(lp):  # (B, n) each
            v, i = sc.topk(min(k, sc.shape[1]), dim=1)
            cand_v, cand_i = torch.cat([best_v, v], 1), torch.cat([best_i, i + s], 1)
            top = cand_v.topk(min(k, cand_v.shape[1]), dim=1)  # earlier chunks first on ties
            best_v, best_i = top.values, cand_i.gather(1, top.indices)
        return best_i, best_v

    def build_sid_graph(self, edges: int | None = None) -> tuple[torch.Tensor, torch.Generator]:
        """A fresh (N, E) graph over the catalogue's SIDs (mmsid.retrieval.graph) from the
        output code embeddings, E = ``edges`` (default cfg.graph_edges), with a generator seeded
        with cfg.graph_seed for its start items."""
        from mmsid.retrieval.graph import build_graph, code_similarity

        emb = self.code_emb if self.out_emb is None else self.out_emb
        adj = build_graph(self.codes, code_similarity(emb.detach()), edges or self.cfg.graph_edges)
        return adj, torch.Generator().manual_seed(self.cfg.graph_seed)

    def sid_graph(self) -> tuple[torch.Tensor, torch.Generator]:
        """decode="graph"'s graph (build_sid_graph at the config's settings), built on first use
        and kept until the weights or the catalogue may change (train/eval, load_state_dict,
        set_catalogue)."""
        if self._graph is None:
            self._graph = self.build_sid_graph()
        return self._graph

    def graph_top_codes(
        self,
        lp: torch.Tensor,
        k: int,
        graph: tuple[torch.Tensor, torch.Generator] | None = None,
        beams: int | None = None,
        steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`top_codes`, approximately, by graph-constrained decoding: over ``graph``
        (a build_sid_graph; default sid_graph) from ``beams`` start items for ``steps`` rounds
        (defaults cfg.graph_beams, cfg.graph_steps), so settings can be compared on one model."""
        from mmsid.retrieval.graph import graph_topk, random_start

        adj, gen = self.sid_graph() if graph is None else graph
        beam = min(max(beams or self.cfg.graph_beams, k), len(self.codes))
        start = random_start(len(self.codes), beam, lp.shape[0], gen).to(lp.device)
        return graph_topk(lp, self.codes, adj, start, steps or self.cfg.graph_steps, k)

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int, **_) -> tuple[torch.Tensor, ...]:
        lp = self.last_log_probs(batch["history"])
        if self.cfg.decode == "graph":
            return self.graph_top_codes(lp, k)
        return self.top_codes(lp, k)  # (B, k) each


def score_reference(model: ParallelSID, lp: torch.Tensor) -> torch.Tensor:
    """The slow reference for :meth:`ParallelSID.score_codes`: item by item, code by code."""
    B, N = lp.shape[0], len(model.codes)
    out = torch.zeros(B, N, dtype=lp.dtype)
    for i in range(N):
        for j in range(model.m):
            out[:, i] += lp[:, j, model.codes[i, j]]
    return out / model.m


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, limit: int = 0
) -> list[np.ndarray]:
    """Shuffled batches of rows of similar length (rows sorted by length after a shuffle, cut
    into batches, batches shuffled), so short sequences do not pay for long ones' padding.
    ``limit``: use a random subset of this many rows (0 = all)."""
    perm = rng.permutation(len(lengths))[: limit or None]
    perm = perm[np.argsort(lengths[perm], kind="stable")]
    chunks = [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    return [chunks[i] for i in rng.permutation(len(chunks))]
