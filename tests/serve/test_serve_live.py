"""`mmsid serve` from outside: a schemathesis run against the live schema, one real uvicorn
process on loopback, and an MCCA ranker behind /rank. Real lfm2k-mm data (the fixtures in this
folder's conftest)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from serving import AUTH, TOKEN, served_scores_are_the_models

# ---- schemathesis against the live schema --------------------------------------------------


@pytest.fixture()
def api_schema(service):
    from mmsid.serve import create_app

    # a body limit above the schema's own (1,000 items of this run's vectors) so that what
    # is tested is the schema; the limit itself has its own test
    app = create_app(service, token=None, max_body=64 << 20)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_schema_no_server_errors(case):
    """Generated requests for every operation: no 5xx, responses as the schema says, invalid
    requests refused. Left out: "every schema-valid request is accepted" (positive data
    acceptance): an item with no content, or twice in one batch, is schema-valid and refused
    (422) by rules a JSON schema cannot state."""
    case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])


# ---- one real process on loopback ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_uvicorn_process(runs, tmp_path, lfm2k):
    import shutil

    import httpx

    shutil.copytree(runs[0], tmp_path / "tok")
    port = _free_port()
    env = {**os.environ, "MMSID_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmsid",
            "serve",
            str(tmp_path / "tok"),
            "--retriever",
            str(runs[1]),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail(proc.stdout.read1().decode() if proc.poll() is not None else "no start")
        assert httpx.get(f"{base}/items/0").json()["sid"]
        vec = {
            n: np.asarray(lfm2k.modalities[n].raw)[5].tolist()
            for n in ("text_minilm", "audio_vggish", "audio_whisper")
        }
        body = {"items": [{"item": "live-1", "embeddings": vec}]}
        assert httpx.post(f"{base}/items", json=body).status_code == 401
        r = httpx.post(f"{base}/items", json=body, headers=AUTH)
        assert r.status_code == 200
        rec = httpx.post(f"{base}/recommend", json={"history": ["live-1"], "k": 3})
        assert rec.status_code == 200 and len(rec.json()["items"]) == 3
        assert "/recommend" in httpx.get(f"{base}/openapi.json").json()["paths"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # what the live process wrote is in the store
    from mmsid.assign import Assigner

    with Assigner(tmp_path / "tok") as a:
        assert a.store.sid(a.version, "live-1") is not None


def test_rank_serves_mcca_and_scores_new_items(runs, real_data_dir, tmp_path, lfm2k):
    """An MCCA ranker over the run's IDs behind /rank: trained items get the model's own
    scores; an item added after training with item j's content scores as j with j's id
    embedding zeroed (its SID embeddings from the store's codes)."""
    import shutil

    from mmsid.ids import SIDTable
    from mmsid.io import load_torch
    from mmsid.ranking.mcca import MCCA
    from mmsid.ranking.run import RankConfig, run_rank
    from mmsid.serve import Service, create_app

    tok = runs[0]
    run_rank(
        RankConfig(
            dataset="lfm2k-mm",
            model="mcca",
            sids={"joint": str(tok / "sids.parquet")},
            out=str(tmp_path / "mcca"),
            data_dir=str(real_data_dir),
            epochs=1,
        ),
        progress=False,
    )
    shutil.copytree(tok, tmp_path / "tok")
    svc = Service(tmp_path / "tok", ranker=tmp_path / "mcca")
    try:
        client = TestClient(create_app(svc, token=TOKEN))
        t = SIDTable.load(tok / "sids.parquet")
        ref = MCCA(len(t.item_ids), {"joint": t.codes}, joint="joint", codebook_size=256)
        ref.load_state_dict(load_torch(tmp_path / "mcca" / "model.pt")["state"])
        ref.eval()
        served_scores_are_the_models(client, svc, ref, lfm2k)
    finally:
        svc.assigner.close()
