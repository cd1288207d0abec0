"""Summary statistics of a data set (``mmsid data describe``)."""

from __future__ import annotations

import numpy as np

from mmsid.data.base import RecDataset


def describe(ds: RecDataset) -> dict:
    """users, items, interactions, density, sequence-length stats, modality coverage."""
    lengths = ds.interactions.groupby("user").size().to_numpy()
    pop = ds.interactions.groupby("item").size().reindex(range(ds.n_items), fill_value=0)
    out = {
        "dataset": ds.name,
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "density": ds.n_interactions / max(1, ds.n_users * ds.n_items),
        "has_timestamps": ds.has_timestamps,
        "sequence_length": {
            "min": int(lengths.min()),
            "median": float(np.median(lengths)),
            "mean": float(lengths.mean()),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()),
        },
        "items_without_interactions": int((pop == 0).sum()),
        "modalities": {
            name: {
                "kind": m.kind,
                "coverage": m.coverage,
                "present": int(m.mask.sum()),
                "missing": int((~m.mask).sum()),
                **({"dim": int(np.asarray(m.raw).shape[1])} if m.kind == "embedding" else {}),
            }
            for name, m in ds.modalities.items()
        },
    }
    if "split" in ds.interactions.columns:
        out["publisher_split"] = ds.interactions["split"].value_counts().to_dict()
    return out
