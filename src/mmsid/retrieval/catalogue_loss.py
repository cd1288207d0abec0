"""The parallel-SID retriever's item loss over the whole catalogue (mmsid.retrieval.parallel,
``loss="item"``): a logsumexp over every allowed item of s_t(i) = sum_j lp_tj[c_ij], computed in
blocks of items with a hand-written backward, beside the plain autograd references it must
equal (full and sampled softmax)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from mmsid.retrieval.parallel import ParallelSID


class CatalogueLSE(torch.autograd.Function):
    """lse_t = logsumexp_{i allowed} s_t(i) with s_t(i) = sum_j lpT[j, c_ij, t]: (M,).

    Items are taken ``rows`` at a time (about 2^19 scores, a cache-sized block): the forward
    pass keeps a running logsumexp, the backward pass recomputes each block's softmax, weights
    it by the incoming gradient and scatters it into the (m, K, M) gradient, so the (N, M)
    score matrix is never held."""

    block = 2**19  # scores per block (the fastest of 2^16 .. 2^25 at Beauty's shapes, 1 thread)

    @staticmethod
    def _block(lpT, codes, allowed, s0: int, rows: int) -> torch.Tensor:
        c = codes[s0 : s0 + rows]  # (n, m)
        s = lpT[0].index_select(0, c[:, 0])  # (n, M)
        for j in range(1, c.shape[1]):
            s += lpT[j].index_select(0, c[:, j])
        return s.masked_fill_(~allowed[s0 : s0 + rows, None], float("-inf"))

    @staticmethod
    def forward(ctx, lpT, codes, allowed):
        M = lpT.shape[2]
        rows = max(1, CatalogueLSE.block // M)
        lse = lpT.new_full((M,), float("-inf"))
        for s0 in range(0, len(codes), rows):
            lse = torch.logaddexp(
                lse, CatalogueLSE._block(lpT, codes, allowed, s0, rows).logsumexp(0)
            )
        ctx.save_for_backward(lpT, codes, allowed, lse)
        ctx.rows = rows
        return lse

    @staticmethod
    def backward(ctx, g):
        lpT, codes, allowed, lse = ctx.saved_tensors
        grad = torch.zeros_like(lpT)  # (m, K, M)
        for s0 in range(0, len(codes), ctx.rows):
            p = CatalogueLSE._block(lpT, codes, allowed, s0, ctx.rows).sub_(lse).exp_()  # (n, M)
            p.mul_(g)  # d lse_t / d s_t(i) = softmax_t(i), times the incoming gradient g_t
            c = codes[s0 : s0 + ctx.rows]
            for j in range(c.shape[1]):
                grad[j].index_add_(0, c[:, j], p)
        return grad, None, None


def item_loss_reference(model: ParallelSID, lp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """The plain autograd reference for :meth:`ParallelSID.item_loss`: the whole (M, N) score
    matrix, one gather per code position."""
    s = lp.float().new_zeros(lp.shape[0], len(model.codes))  # (M, N)
    for j in range(model.m):
        s = s + lp[:, j].float().index_select(1, model.codes[:, j])
    return F.cross_entropy(s.masked_fill(~model.trainable, float("-inf")), tgt)


def sampled_item_loss_reference(
    model: ParallelSID, lp: torch.Tensor, tgt: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """Plain autograd reference for the sampled item loss: position t's softmax runs over the
    drawn items ``neg`` and its target, each item once."""
    losses = []
    for t in range(lp.shape[0]):
        cand = torch.unique(torch.cat([neg, tgt[t : t + 1]]))  # (S or S+1,)
        s = sum(lp[t, j].float()[model.codes[cand, j]] for j in range(model.m))
        losses.append(torch.logsumexp(s, 0) - s[cand == tgt[t]][0])
    return torch.stack(losses).mean()
