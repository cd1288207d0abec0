"""`mmsid serve` in process (TestClient): every endpoint and error path, recommendations checked
against the model's own scores, new items recommendable without retraining, content fusion.
Real lfm2k-mm data (the fixtures in this folder's conftest)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from serving import AUTH, TOKEN, served_scores_are_the_models, vectors


def test_health_lookup_and_prefix(client, service):
    h = client.get("/health").json()
    assert h["items"] == 1425 and h["levels"] == 3 and h["retriever"] is True
    sid = client.get("/items/17").json()["sid"]
    assert sid == list(service.assigner.store.sid(service.assigner.version, "17"))
    r = client.get("/items/not-an-item")
    assert r.status_code == 404 and "not-an-item" in r.json()["detail"]
    found = client.get(f"/sids/{sid[0]}-{sid[1]}").json()
    names, codes = service.assigner.catalogue()
    expect = {n for n, c in zip(names, codes) if c[0] == sid[0] and c[1] == sid[1]}
    assert set(found["items"]) == expect and "17" in expect and found["truncated"] is False
    full = client.get("/sids/" + "-".join(map(str, sid))).json()
    assert full["items"] == ["17"]
    some = client.get("/sids/?limit=3")  # empty prefix: every item, capped
    assert some.status_code in (200, 404)  # an empty path segment is the router's call
    capped = client.get(f"/sids/{sid[0]}", params={"limit": 1}).json()
    assert len(capped["items"]) == 1
    for bad in ("x-1", "1_2", "-1", "1--2"):
        r = client.get(f"/sids/{bad}")
        assert r.status_code == 422 and "pattern" in str(r.json()["detail"])
    assert client.get("/sids/1-2-3-4-5").json()["items"] == []  # longer than a SID
    assert client.get("/sids/1", params={"limit": 0}).status_code == 422


def test_recommend_matches_the_model_and_excludes_history(client, service):
    hist = ["3", "15", "99"]
    r = client.post("/recommend", json={"history": hist, "k": 10})
    assert r.status_code == 200
    got = r.json()["items"]
    assert len(got) == 10 and not {g["item"] for g in got} & set(hist)
    # the reference: the model's own scores of the whole catalogue, history removed
    idx = torch.tensor([[service.index[h] for h in hist]])
    s = service.model.score(idx)[0]
    s[idx[0]] = -torch.inf
    assert [g["score"] for g in got] == pytest.approx(s.topk(10).values.tolist(), abs=1e-6)
    every = client.post(
        "/recommend", json={"history": hist, "k": 1000, "exclude_history": False}
    ).json()["items"]
    full = service.model.score(idx)[0].topk(1000).values.tolist()
    assert [g["score"] for g in every] == pytest.approx(full, abs=1e-6)


def test_new_items_are_assigned_and_recommendable_without_retraining(client, service, lfm2k):
    top = client.post("/recommend", json={"history": ["3", "15"], "k": 1}).json()["items"][0]
    # a new item with the content of the top item gets its codes, so it ties with it
    body = {
        "items": [{"item": "new-1", "embeddings": vectors(service, [int(top["item"])], lfm2k)[0]}]
    }
    assert client.post("/items", json=body).status_code == 401  # writes need the token
    assert (
        client.post("/items", json=body, headers={"Authorization": "Bearer no"}).status_code == 401
    )
    r = client.post("/items", json=body, headers=AUTH)
    assert r.status_code == 200
    assert r.json()["assigned"][0]["sid"][:3] == top["codes"]
    rec = client.post("/recommend", json={"history": ["3", "15"], "k": 2}).json()["items"]
    assert {x["item"] for x in rec} == {top["item"], "new-1"}
    assert rec[0]["score"] == pytest.approx(rec[1]["score"])
    # and a new item can be a history item
    assert client.post("/recommend", json={"history": ["new-1"], "k": 5}).status_code == 200
    assert client.get("/items/new-1").json()["sid"] == r.json()["assigned"][0]["sid"]
    assert client.get("/health").json()["items"] == 1426


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"items": []}, 422, "items"),
        ({"items": [{"item": ""}]}, 422, "item"),
        ({"items": [{"item": "a"}]}, 422, "no content"),
        ({"items": [{"item": "a", "embeddings": {"smell": [1.0]}}]}, 422, "smell"),
        ({"items": [{"item": "a", "embeddings": {"audio_vggish": [1.0]}}]}, 422, "at least 128"),
        ({"items": [{"item": "a", "content": {"audio_vggish": "hi"}}]}, 422, "audio_vggish"),
        ({"items": [{"item": "a", "embeddings": {"audio_vggish": [0.0] * 128}}]}, 422, "content"),
        ({"items": [{"item": "a"}, {"item": "a"}]}, 422, "twice"),
        ({"items": [{"item": "a", "content": {"smell": "hi"}}]}, 422, "smell"),
        ({"items": "nope"}, 422, "items"),
    ],
)
def test_add_errors_name_the_field_and_write_nothing(client, service, body, status, field):
    n = len(service.names)
    r = client.post("/items", json=body, headers=AUTH)
    assert r.status_code == status and field in str(r.json()["detail"])
    assert len(service.assigner.catalogue()[0]) == n


def test_changed_content_is_a_409_unless_replace(client, service, lfm2k):
    v = vectors(service, [1, 2], lfm2k)
    first = {"items": [{"item": "c", "embeddings": v[0]}]}
    sid = client.post("/items", json=first, headers=AUTH).json()["assigned"][0]["sid"]
    assert client.post("/items", json=first, headers=AUTH).json()["assigned"][0]["sid"] == sid
    other = {"items": [{"item": "c", "embeddings": v[1]}]}
    r = client.post("/items", json=other, headers=AUTH)
    assert r.status_code == 409 and "replace" in r.json()["detail"]
    assert client.get("/items/c").json()["sid"] == sid
    n = len(service.names)
    r = client.post("/items", json={**other, "replace": True}, headers=AUTH)
    # the served catalogue follows the store: same size, the item's new codes
    assert len(service.names) == n
    new_sid = r.json()["assigned"][0]["sid"]
    assert service.codes[service.index["c"]].tolist() == new_sid[:3]
    names, codes = service.assigner.catalogue()
    assert sorted(names) == sorted(service.names)
    assert (
        r.status_code == 200
        and client.get("/items/c").json()["sid"] == r.json()["assigned"][0]["sid"]
    )


def test_rank_matches_the_trained_ranker_and_scores_new_items(client, service, runs, lfm2k):
    """Trained items: the served scores are the rank stage's model's own. An item added after
    training with item j's content: the model's score of j with j's id embedding zeroed."""

    from mmsid.ids import SIDTable
    from mmsid.io import load_torch
    from mmsid.ranking.din import DIN

    t = SIDTable.load(runs[0] / "sids.parquet")
    ref = DIN(len(t.item_ids), sids={"joint": t.codes}, codebook_size=256)
    ref.load_state_dict(load_torch(runs[2] / "model.pt")["state"])
    ref.eval()
    served_scores_are_the_models(client, service, ref, lfm2k)
    r = client.post("/rank", json={"history": ["late"], "candidates": ["nope"]})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert client.post("/rank", json={"history": [], "candidates": []}).status_code == 422


def test_recommend_errors_and_size_limit(client):
    r = client.post("/recommend", json={"history": ["3", "ghost"]})
    assert r.status_code == 404 and "ghost" in r.json()["detail"]
    for body in ({"history": []}, {"history": ["3"], "k": 0}, {"history": ["3"], "k": 10**6}):
        assert client.post("/recommend", json=body).status_code == 422
    big = {"items": [{"item": "a", "embeddings": {"audio_vggish": [0.5] * 30_000}}]}
    assert client.post("/items", json=big, headers=AUTH).status_code == 413


def test_without_retriever_recommend_is_409(runs, tmp_path):
    import shutil

    from mmsid.serve import Service, create_app

    shutil.copytree(runs[0], tmp_path / "tok")
    c = TestClient(create_app(Service(tmp_path / "tok")))
    assert c.get("/health").json()["retriever"] is False
    r = c.post("/recommend", json={"history": ["3"]})
    assert r.status_code == 409 and "--retriever" in r.json()["detail"]
    r = c.post("/rank", json={"history": ["3"], "candidates": ["4"]})
    assert r.status_code == 409 and "--ranker" in r.json()["detail"]
    body = {"items": [{"item": "z", "embeddings": {"audio_vggish": [0.1] * 128}}]}
    assert c.post("/items", json=body).status_code == 200  # no token configured: open
    huge = {"items": [{"item": "h", "embeddings": {"audio_vggish": [1e300] * 128}}]}
    r = c.post("/items", json=huge)
    assert r.status_code == 422 and "float32" in r.json()["detail"]


def test_retriever_trained_on_other_ids_is_refused(runs, real_data_dir, tmp_path):
    from mmsid.errors import DataError
    from mmsid.serve import Service
    from mmsid.tokenize import TokenizeConfig, run_tokenize

    other = tmp_path / "other"
    run_tokenize(
        TokenizeConfig(
            dataset="lfm2k-mm",
            method="rq-kmeans",
            seed=1,
            out=str(other),
            data_dir=str(real_data_dir),
        ),
        progress=False,
    )
    with pytest.raises(DataError, match="trained on"):
        Service(other, retriever=runs[1])
    with pytest.raises(DataError, match="trained on"):
        Service(other, ranker=runs[2])
    with pytest.raises(DataError, match="parallel-sid"):
        Service(runs[0], retriever=runs[2])


def test_fusion_serves_the_runs_choice_with_content_and_the_new_item_prior(
    runs, real_data_dir, tmp_path, lfm2k
):
    """--fusion auto applies the (w, b) the retrieve run chose on validation; at a given (w, b)
    the served scores are the slow fusion reference's over the store's catalogue, trained
    items read their data set content, a protocol cold item and an added one get b, and an
    item added with item j's content scores as j plus b."""
    import json
    import shutil

    from mmsid.errors import DataError
    from mmsid.protocol import load_protocol
    from mmsid.retrieval.baselines import item_content
    from mmsid.retrieval.fusion import fusion_reference
    from mmsid.serve import Service, create_app

    tok, plain, _, fused = runs
    shutil.copytree(tok, tmp_path / "tok")
    chosen = json.loads((fused / "metrics.json").read_text())["fused"]
    auto = Service(tmp_path / "tok", retriever=fused)
    expect = {"weight": chosen["weight"], "new_item_bias": chosen["new_item_bias"]}
    assert auto.health()["fusion"] == (expect if any(expect.values()) else None)
    auto.assigner.close()
    assert Service(tmp_path / "tok", retriever=plain).health()["fusion"] is None  # no choice
    assert Service(tmp_path / "tok", retriever=fused, fusion="off").fused is None
    for bad in ("x", "1", "-1,0", "nan,0"):
        with pytest.raises(DataError, match="W,B"):
            Service(tmp_path / "tok", retriever=fused, fusion=bad)

    w, b = 2.0, 0.5
    svc = Service(tmp_path / "tok", retriever=plain, fusion=f"{w},{b}")
    client = TestClient(create_app(svc, token=TOKEN, max_body=100_000))
    assert client.get("/health").json()["fusion"] == {"weight": w, "new_item_bias": b}
    # trained items read the data set's content; the protocol's cold items are new
    x, _, _ = item_content("lfm2k-mm", str(real_data_dir), [], False)
    for item in (3, 17, 99):
        assert np.allclose(svc.content[svc.index[str(item)]], x[item])
    proto = load_protocol("lfm2k-mm", str(real_data_dir), {"max_history": 8})
    cold = np.flatnonzero(proto.is_cold)
    trained = svc.model.trainable.numpy()
    assert not trained[[svc.index[str(i)] for i in cold]].any()
    assert trained[[svc.index[str(i)] for i in np.flatnonzero(~proto.is_cold)]].all()
    hist = ["3", "15", "99"]
    ref = fusion_reference(svc.model, svc.content, np.array([[svc.index[h] for h in hist]]), w, b)[
        0
    ]
    ref[[svc.index[h] for h in hist]] = -np.inf
    got = client.post("/recommend", json={"history": hist, "k": 20}).json()["items"]
    assert [g["score"] for g in got] == pytest.approx(np.sort(ref)[::-1][:20].tolist(), abs=1e-4)
    # an item added with a warm item's content: same codes, same content term, plus b
    j = next(int(g["item"]) for g in got if trained[svc.index[g["item"]]])
    body = {"items": [{"item": "twin", "embeddings": vectors(svc, [j], lfm2k)[0]}]}
    assert client.post("/items", json=body, headers=AUTH).status_code == 200
    assert np.allclose(svc.content[svc.index["twin"]], svc.content[svc.index[str(j)]], atol=1e-6)
    every = client.post("/recommend", json={"history": hist, "k": 30}).json()["items"]
    score = {g["item"]: g["score"] for g in every}
    assert score["twin"] - score[str(j)] == pytest.approx(b, abs=1e-4)
    svc.assigner.close()
