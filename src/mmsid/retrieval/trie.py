"""The catalogue's SIDs as a prefix trie held in dense tensors, for constrained beam search.

Every SID has the same depth D (L codes then the collision index). Nodes are numbered
depth by depth, the root is 0. ``next_node[n, t]`` is the child of node ``n`` reached by token
``t`` (the token's code at that level, not a vocabulary offset), or -1 when no catalogue item
continues that way; ``leaf_item[n]`` is the item at a depth-D node. Constraining a step is
then one gather: ``next_node[node]`` gives, for every beam at once, which tokens are allowed
and where they lead (no per-step scan over the catalogue, no Python loop over beams).

Memory: ``n_nodes x V`` int32, where ``n_nodes <= 1 + D * N``. Amazon Beauty (12,101 items,
K = 256, 4 levels) holds about 25k nodes: 25 MB.

``reference_allowed`` is the slow reference (a Python dict trie) the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mmsid.errors import DataError


@dataclass
class SIDTrie:
    next_node: torch.Tensor  # (n_nodes, V) int64, -1 = not a valid continuation
    leaf_item: torch.Tensor  # (n_nodes,) int64, the item at a leaf, -1 elsewhere
    vocab_sizes: tuple[int, ...]  # tokens per level, len D
    depth: int

    @classmethod
    def from_sids(
        cls, sids: np.ndarray, item_ids: np.ndarray | None = None, *, vocab_sizes=None
    ) -> SIDTrie:
        """Build from (N, D) SIDs; ``item_ids`` (N,) defaults to 0..N-1.

        Raises DataError when two items share a full SID (the trie could not tell them apart).
        """
        sids = np.asarray(sids, dtype=np.int64)
        if sids.ndim != 2 or len(sids) == 0:
            raise DataError(f"SIDs must be a non-empty (items, levels) array, got {sids.shape}")
        if sids.min() < 0:
            raise DataError("SIDs hold negative codes")
        N, D = sids.shape
        ids = np.arange(N) if item_ids is None else np.asarray(item_ids, dtype=np.int64)
        vs = tuple(int(v) for v in (vocab_sizes or (sids.max(0) + 1)))
        if len(vs) != D or any(int(sids[:, t].max()) >= vs[t] for t in range(D)):
            raise DataError(f"SID codes exceed the vocabulary sizes {vs}")
        V = max(vs)
        node = np.zeros(N, dtype=np.int64)  # each item's node at the current depth
        edges, n_nodes = [], 1
        for t in range(D):
            key = node * V + sids[:, t]
            uniq, inv = np.unique(key, return_inverse=True)
            child = n_nodes + np.arange(len(uniq))
            edges.append((uniq // V, uniq % V, child))
            node = child[inv.reshape(-1)]
            n_nodes += len(uniq)
        if len(np.unique(node)) < N:
            _, first, counts = np.unique(node, return_index=True, return_counts=True)
            dup = sids[first[counts > 1][0]].tolist()
            raise DataError(
                f"{int((counts > 1).sum())} SID(s) are shared by several items (e.g. {dup}); "
                "a retrieval SID must be unique: use the table with its collision level"
            )
        table = np.full((n_nodes, V), -1, dtype=np.int64)
        for parent, tok, child in edges:
            table[parent, tok] = child
        leaf = np.full(n_nodes, -1, dtype=np.int64)
        leaf[node] = ids
        return cls(torch.from_numpy(table), torch.from_numpy(leaf), vs, D)

    def to(self, device) -> SIDTrie:
        return SIDTrie(
            self.next_node.to(device), self.leaf_item.to(device), self.vocab_sizes, self.depth
        )

    def allowed(self, node: torch.Tensor, level: int) -> torch.Tensor:
        """(..., V_level) child ids (-1 = not allowed) for nodes (...,) at ``level``."""
        return self.next_node[node][..., : self.vocab_sizes[level]]


def reference_allowed(sids: np.ndarray, prefix: tuple[int, ...]) -> set[int]:
    """Slow reference: the tokens that continue ``prefix`` into some catalogue SID."""
    t = len(prefix)
    return {int(s[t]) for s in np.asarray(sids) if tuple(int(v) for v in s[:t]) == prefix}
