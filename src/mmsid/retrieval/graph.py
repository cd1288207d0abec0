"""Graph-constrained decoding for parallel-SID retrieval (after RPG, Hou et al., KDD 2025): an
approximate top-k that scores a few hundred items per user instead of the whole catalogue.

Exact scoring (mmsid.retrieval.parallel) costs N x m gathers per user; it is the default and
the reference this decoder is measured against (``benchmarks/bench_graph_decode.py``). Where N
is large, RPG instead walks a graph over the catalogue's SIDs:

    sim(i, i')  = (1/m) sum_j (1 + cos(E_j[c_ij], E_j[c_i'j])) / 2      item-item, in [0, 1]
    adj(i)      = the E items of largest sim(i, .)  (i itself among them)     (N, E)
    beam_0      = b items drawn at random
    beam_{s+1}  = top-b by score of  beam_s  U  adj(beam_s)                (B, b + b E)
    result      = the top k of beam_S                                       after S steps

with ``score(i) = (1/m) sum_j log p_j(c_ij)``, the exact score, computed only for the
candidates. Public facts behind it (RPG's paper and code, read, not copied): the similarity
is the mean over code positions of the cosine between the two codes' embeddings, rescaled to
[0, 1]; each item keeps its ``n_edges`` most similar items; decoding starts from ``num_beams``
random items and runs ``propagation_steps`` rounds (Beauty: 10 beams, 100 edges, 3 steps).
Choices of ours: the current beam stays among the candidates (so the beam's best score never
falls from one step to the next; RPG keeps only the neighbours, which hold each item itself
unless more than E items share its SID); the beam is never narrower than k; every user of a
batch starts from the same random items (one seeded draw per batch, cheap for any N).

Building the graph is exact, in blocks of rows: O(N^2 m) once per trained model and
catalogue (RPG's cost too). It pays off when far more users are scored than there are items.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def code_similarity(emb: torch.Tensor) -> torch.Tensor:
    """(m, K, d) code embeddings -> (m, K, K) similarity (1 + cos) / 2 of each position's codes."""
    e = F.normalize(emb.float(), dim=-1)
    return (1.0 + torch.einsum("jkd,jld->jkl", e, e)) / 2.0  # (m, K, K)


def build_graph(
    codes: torch.Tensor, sim: torch.Tensor, n_edges: int, *, block: int = 2**24
) -> torch.Tensor:
    """(N, m) codes and (m, K, K) code similarity -> (N, E) each item's ``n_edges`` most similar
    items (mean similarity over code positions), most similar first; computed ``block`` scores
    at a time so the (N, N) matrix is never held."""
    N, m = codes.shape
    E = min(int(n_edges), N)
    if E < 1:
        raise ValueError(f"n_edges must be >= 1, got {n_edges}")
    rows = max(1, block // N)
    out = torch.empty(N, E, dtype=torch.long, device=codes.device)
    for s in range(0, N, rows):
        c = codes[s : s + rows]  # (n, m)
        acc = sim[0][c[:, 0]][:, codes[:, 0]]  # (n, N)
        for j in range(1, m):
            acc += sim[j][c[:, j]][:, codes[:, j]]
        out[s : s + rows] = acc.topk(E, dim=1).indices
    return out


def build_graph_reference(codes: torch.Tensor, sim: torch.Tensor, n_edges: int) -> torch.Tensor:
    """The slow reference for :func:`build_graph`: the full (N, N) similarity, item by item."""
    N, m = codes.shape
    full = torch.zeros(N, N)
    for i in range(N):
        for j in range(m):
            full[i] += sim[j, codes[i, j], codes[:, j]]
    return full.topk(min(n_edges, N), dim=1).indices


def candidate_scores(lp: torch.Tensor, codes: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """(B, m, K) log-probabilities, (N, m) codes, (B, C) item ids -> (B, C) mean code
    log-probability of each candidate (the exact score, for these items only)."""
    B, m, K = lp.shape
    offs = torch.arange(m, device=lp.device) * K  # (m,)
    idx = (codes[cand] + offs).reshape(B, -1)  # (B, C m)
    return lp.reshape(B, m * K).gather(1, idx).view(B, -1, m).mean(-1)  # (B, C)


def graph_topk(
    lp: torch.Tensor,
    codes: torch.Tensor,
    adj: torch.Tensor,
    start: torch.Tensor,
    steps: int,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Graph-constrained top-k: (B, m, K) log-probabilities, (N, m) codes, (N, E) graph, (B, b)
    distinct start items per user -> (B, k) item ids and their exact scores, best first.
    Candidates are deduplicated by sorting (a repeat scores -inf), so a beam never holds an
    item twice while it has distinct items to take."""
    cur = start
    b = cur.shape[1]
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if k > b:
        raise ValueError(f"k = {k} exceeds the beam ({b}); use a beam of at least k")
    for _ in range(steps):
        cand = torch.cat([cur, adj[cur].flatten(1)], 1)  # (B, b + b E)
        cand, _ = cand.sort(1)
        sc = candidate_scores(lp, codes, cand)  # (B, C)
        sc[:, 1:].masked_fill_(cand[:, 1:] == cand[:, :-1], float("-inf"))  # repeats
        cur = cand.gather(1, best_first(sc)[:, :b])  # (B, b)
    sc = candidate_scores(lp, codes, cur)
    order = best_first(sc)[:, :k]
    return cur.gather(1, order), sc.gather(1, order)


def best_first(scores: torch.Tensor) -> torch.Tensor:
    """(B, C) -> (B, C) column order by falling score; a stable sort, so equal scores keep
    their column order (the candidates are sorted by item id: the lower id first)."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def random_start(n_items: int, beam: int, users: int, generator: torch.Generator) -> torch.Tensor:
    """(users, beam) start items: ``beam`` distinct items drawn once, shared by every user."""
    if not 1 <= beam <= n_items:
        raise ValueError(f"the beam ({beam}) must be in [1, {n_items}] (the catalogue's size)")
    return torch.randperm(n_items, generator=generator)[:beam].expand(users, beam)


def graph_topk_reference(
    lp: torch.Tensor,
    codes: torch.Tensor,
    adj: torch.Tensor,
    start: torch.Tensor,
    steps: int,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The slow reference for :func:`graph_topk`: user by user, candidate sets as Python sets,
    each score summed code by code; equal scores go to the lower item id, as in the fast path."""
    m = codes.shape[1]
    ids, vals = [], []
    for u in range(lp.shape[0]):

        def score(i: int) -> float:
            return float(sum(lp[u, j, codes[i, j]] for j in range(m)) / m)

        cur = [int(i) for i in start[u]]
        b = len(cur)
        for _ in range(steps):
            cand = set(cur) | {int(n) for i in cur for n in adj[i]}
            cur = sorted(cand, key=lambda i: (-score(i), i))[:b]
        best = sorted(cur, key=lambda i: (-score(i), i))[:k]
        ids.append(best)
        vals.append([score(i) for i in best])
    return torch.tensor(ids), torch.tensor(vals, dtype=lp.dtype)
