"""Fixtures of the serve tests (real lfm2k-mm data): one tokenize run, a small parallel-SID
retriever trained on its IDs (alone and with content fusion) and a DIN ranker, made once per
session; a fresh copy of the run per test, and an in-process client."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from serving import TOKEN


@pytest.fixture(scope="session")
def runs(real_data_dir, tmp_path_factory):
    from mmsid.protocol import ProtocolConfig
    from mmsid.ranking.run import RankConfig, run_rank
    from mmsid.retrieval.config import RetrieveConfig
    from mmsid.retrieval.parallel import ParallelSIDConfig
    from mmsid.retrieval.run import run_retrieve
    from mmsid.tokenize import TokenizeConfig, run_tokenize

    root = tmp_path_factory.mktemp("serve")
    tok = root / "tok"
    run_tokenize(
        TokenizeConfig(
            dataset="lfm2k-mm", method="rq-kmeans", out=str(tok), data_dir=str(real_data_dir)
        ),
        progress=False,
    )

    def retrieve(out, **fusion):
        run_retrieve(
            RetrieveConfig(
                dataset="lfm2k-mm",
                model="parallel-sid",
                sids=str(tok / "sids.parquet"),
                out=str(out),
                data_dir=str(real_data_dir),
                epochs=1,
                valid_sample=100,
                parallel=ParallelSIDConfig(d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0),
                protocol=ProtocolConfig(max_history=8),
                amp="off",
                **fusion,
            ),
            progress=False,
        )
        return out

    ret = retrieve(root / "ret")
    # the same retriever, with content fusion chosen on validation
    fused = retrieve(root / "ret-fused", fusion_weights=(0.5, 4.0), fusion_new_item_bias=(0.1,))
    rank = root / "rank"
    run_rank(
        RankConfig(
            dataset="lfm2k-mm",
            model="din-sid",
            sids={"joint": str(tok / "sids.parquet")},
            out=str(rank),
            data_dir=str(real_data_dir),
            epochs=1,
        ),
        progress=False,
    )
    return tok, ret, rank, fused


@pytest.fixture()
def service(runs, tmp_path):
    """A fresh copy of the run per test (writes stay in the test)."""
    import shutil

    from mmsid.serve import Service

    tok, ret, rank, _ = runs
    shutil.copytree(tok, tmp_path / "tok")
    svc = Service(tmp_path / "tok", retriever=ret, ranker=rank)
    yield svc
    svc.assigner.close()


@pytest.fixture()
def client(service):
    from mmsid.serve import create_app

    return TestClient(create_app(service, token=TOKEN, max_body=100_000))
