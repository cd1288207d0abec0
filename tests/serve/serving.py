"""What the serve tests share: the service's token, its auth header, an item's raw content
vectors, and the check that /rank serves a trained ranker's own scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def vectors(service, rows, lfm2k):
    return [
        {n: np.asarray(lfm2k.modalities[n].raw)[r].tolist() for n in service.assigner.inputs.names}
        for r in rows
    ]


def served_scores_are_the_models(client, service, ref, lfm2k) -> None:
    """/rank gives the trained model ``ref``'s own scores; an item added after training with
    item 50's content scores as 50 with 50's id embedding zeroed (and that embedding mattered)."""
    import copy

    hist, cands = ["10", "20", "30"], ["40", "50", "60"]
    got = client.post("/rank", json={"history": hist, "candidates": cands}).json()["scores"]
    row = torch.full((3, service.rank_history), -1, dtype=torch.long)
    row[:, :3] = torch.tensor([10, 20, 30])
    want = ref.predict({"history": row, "item": torch.tensor([40, 50, 60])}).tolist()
    assert [g["score"] for g in got] == pytest.approx(want, abs=1e-6)
    body = {"items": [{"item": "late", "embeddings": vectors(service, [50], lfm2k)[0]}]}
    assert client.post("/items", json=body, headers=AUTH).status_code == 200
    late = client.post("/rank", json={"history": hist, "candidates": ["late"]}).json()
    blank = copy.deepcopy(ref)
    with torch.no_grad():
        blank.item.weight[50].zero_()
    one = {"history": row[:1], "item": torch.tensor([50])}
    want = blank.predict(one).item()
    assert late["scores"][0]["score"] == pytest.approx(want, abs=1e-6)
    assert want != pytest.approx(ref.predict(one).item(), abs=1e-9)
