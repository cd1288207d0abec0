"""IDs for new items without retraining (mmsid.assign), on real lfm2k-mm tokenize runs and
real MiniLM text embeddings; the `mmsid ids` commands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mmsid.errors import DataError


def _tokenize(real_data_dir, out, **kw):
    from mmsid.tokenize import TokenizeConfig, run_tokenize

    cfg = TokenizeConfig(
        dataset="lfm2k-mm", method="rq-kmeans", out=str(out), data_dir=str(real_data_dir), **kw
    )
    run_tokenize(cfg, progress=False)
    return out


@pytest.fixture(scope="module")
def lfm_run(real_data_dir, tmp_path_factory):
    return _tokenize(real_data_dir, tmp_path_factory.mktemp("assign") / "tok")


def _copies(lfm2k, names, rows, prefix="copy"):
    """New items whose content is that of catalogue rows ``rows`` (embedding modalities)."""
    frame = pd.DataFrame({"item": [f"{prefix}-{r}" for r in rows]})
    emb = {n: np.asarray(lfm2k.modalities[n].raw)[rows] for n in names}
    return frame, emb


def test_store_is_seeded_as_the_sid_table(lfm_run):
    from mmsid.assign import Assigner
    from mmsid.ids import SIDTable

    t = SIDTable.load(lfm_run / "sids.parquet")
    with Assigner(lfm_run) as a:
        names, codes = a.catalogue()
        assert names == [str(i) for i in t.item_ids]
        np.testing.assert_array_equal(codes, t.codes)
        # the store's collision allocation reproduces collision_index's, item for item
        got = [a.store.sid(a.version, str(i))[-1] for i in t.item_ids]
        np.testing.assert_array_equal(got, t.collision)
        assert t.collision.max() > 0  # the check covers real collisions


def test_same_content_same_codes_idempotent_and_replace(lfm_run, lfm2k):
    from mmsid.assign import Assigner

    rows = [0, 7, 42, 300, 1000]
    with Assigner(lfm_run) as a:
        names, codes = a.catalogue()
        frame, emb = _copies(lfm2k, a.inputs.names, rows)
        before = {k: v.copy() for k, v in emb.items()}
        res = a.assign(frame, emb)
        for k in emb:  # the caller's arrays are read, never normalised in place
            np.testing.assert_array_equal(emb[k], before[k])
        got = res[[f"c{i}" for i in range(codes.shape[1])]].to_numpy()
        np.testing.assert_array_equal(got, codes[rows])  # no retraining, the same codes
        for r, coll in zip(rows, res["collision"]):  # next index after the catalogue's
            assert coll == int((codes == codes[r]).all(1).sum())
        n = len(a.catalogue()[0])
        again = a.assign(frame, emb)
        pd.testing.assert_frame_equal(again, res)  # idempotent
        assert len(a.catalogue()[0]) == n
        other = {k: v[::-1].copy() for k, v in emb.items()}  # changed content
        with pytest.raises(DataError, match="other content.*replace"):
            a.assign(frame, other)
        assert a.store.sid(a.version, "copy-0") == tuple(res.iloc[0, 2:].astype(int))
        swapped = a.assign(frame, other, replace=True)
        np.testing.assert_array_equal(
            swapped[[f"c{i}" for i in range(codes.shape[1])]].to_numpy(), codes[rows[::-1]]
        )


def test_a_bad_batch_writes_nothing(lfm_run, lfm2k):
    from mmsid.assign import Assigner

    with Assigner(lfm_run) as a:
        frame, emb = _copies(lfm2k, a.inputs.names, [1, 2, 3], prefix="bad")
        n = len(a.catalogue()[0])
        emb[a.inputs.names[0]][2, 0] = np.nan
        with pytest.raises(DataError, match="NaN"):
            a.assign(frame, emb)
        assert len(a.catalogue()[0]) == n and a.store.sid(a.version, "bad-1") is None


@pytest.mark.parametrize(
    "case, match",
    [
        ("no-item-column", "no 'item' column"),
        ("duplicate", "appears twice"),
        ("wrong-width", r"expected \(2, "),
        ("unknown-modality", "the run's modalities"),
        ("no-content", "no content"),
        ("empty-row", "has no content in any modality"),
        ("embedding-as-column", "precomputed embedding modality"),
    ],
)
def test_bad_input_is_refused_with_a_message(lfm_run, lfm2k, case, match):
    from mmsid.assign import Assigner

    with Assigner(lfm_run) as a:
        frame, emb = _copies(lfm2k, a.inputs.names, [5, 6], prefix=case)
        first = a.inputs.names[0]
        if case == "no-item-column":
            frame = frame.rename(columns={"item": "id"})
        elif case == "duplicate":
            frame["item"] = "x"
        elif case == "wrong-width":
            emb[first] = emb[first][:, :10]
        elif case == "unknown-modality":
            emb["smell"] = np.ones((2, 3))
        elif case == "no-content":
            emb = {}
        elif case == "empty-row":
            emb = {k: v.copy() for k, v in emb.items()}
            for v in emb.values():
                v[1] = 0.0
        elif case == "embedding-as-column":
            frame[first] = "some text"
            emb.pop(first)
        with pytest.raises(DataError, match=match):
            a.assign(frame, emb)


def test_centred_run_gives_catalogue_content_its_own_codes(real_data_dir, tmp_path, lfm2k):
    """The centering means are fitted at tokenize time and saved: without them (or with the
    wrong ones) re-assigned catalogue content would land on other codes."""
    from mmsid.assign import Assigner

    run = _tokenize(real_data_dir, tmp_path / "centred", center=True)
    rows = list(range(0, 1400, 70))
    with Assigner(run) as a:
        assert set(a.inputs.means) == set(a.inputs.names)
        _, codes = a.catalogue()
        frame, emb = _copies(lfm2k, a.inputs.names, rows)
        res = a.assign(frame, emb)
        np.testing.assert_array_equal(res.iloc[:, 2:-1].to_numpy(), codes[rows])


def test_text_items_through_the_real_encoder(ml100k, tmp_path):
    """A run over a text modality: new items' text goes through the run's MiniLM encoder;
    a new item with a catalogue item's text gets that item's codes."""
    import yaml

    from mmsid.assign import Assigner, RunInputs, seed_store
    from mmsid.features import embed_modality, item_content_hashes
    from mmsid.features.text import ENCODER_ID
    from mmsid.quantizers import tokenizer_for

    mod = ml100k.modalities["text"]
    idx = [i for i in range(40) if mod.mask[i]][:24]
    from mmsid.data.base import Modality

    sub = Modality("text", "text", [mod.raw[i] for i in idx])
    x, _, _ = embed_modality(sub, progress=False)
    tok = tokenizer_for("rq-kmeans", levels=2, codebook_size=4, seed=0).fit(x)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"codebook_size": 4, "collision_cap": 64}))
    tok.save(run / "tokenizer.pt")
    RunInputs(["text"], ["text"], [384], [ENCODER_ID]).save(run / "inputs.npz")
    codes = tok.transform(x)
    seed_store(
        run, np.arange(len(idx)), codes, item_content_hashes([sub]), codebook_size=4, cap=64,
        note="test",
    )  # fmt: skip
    with Assigner(run) as a:
        new = pd.DataFrame({"item": ["n0", "n1"], "text": [sub.raw[3], "A quiet film."]})
        res = a.assign(new)
        assert res.loc[0, ["c0", "c1"]].tolist() == codes[3].tolist()
        assert res.loc[0, "collision"] == int((codes == codes[3]).all(1).sum())
        with pytest.raises(DataError, match="other content"):
            a.assign(pd.DataFrame({"item": ["n0"], "text": ["Something else entirely."]}))


def test_cli_assign_show_find(lfm_run, lfm2k, tmp_path):
    from mmsid.cli import main

    with __import__("mmsid.assign", fromlist=["Assigner"]).Assigner(lfm_run) as a:
        names = a.inputs.names
        _, codes = a.catalogue()
    rows = [11, 12]
    pd.DataFrame({"item": ["cli-11", "cli-12"]}).to_csv(tmp_path / "new.csv", index=False)
    args = ["ids", "assign", str(lfm_run), "--items", str(tmp_path / "new.csv")]
    for n in names:
        np.save(tmp_path / f"{n}.npy", np.asarray(lfm2k.modalities[n].raw)[rows])
        args += ["--embeddings", f"{n}={tmp_path / f'{n}.npy'}"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "sids.parquet")])
    assert r.exit_code == 0, r.output
    out = pd.read_parquet(tmp_path / "sids.parquet")
    np.testing.assert_array_equal(out[["c0", "c1", "c2"]].to_numpy(), codes[rows])
    r = CliRunner().invoke(main, ["ids", "show", str(lfm_run), "cli-11", "nope"])
    assert r.exit_code == 1 and "cli-11\t" + out.loc[0, "sid"] in r.output and "(none)" in r.output
    prefix = "-".join(map(str, codes[11][:2]))
    r = CliRunner().invoke(main, ["ids", "find", str(lfm_run), prefix])
    assert r.exit_code == 0 and "cli-11" in r.output.split() and "11" in r.output.split()
    r = CliRunner().invoke(main, ["ids", "find", str(lfm_run), "1_2"])
    assert r.exit_code == 2 and "expected codes joined by '-'" in r.output
    r = CliRunner().invoke(main, ["ids", "assign", str(tmp_path), "--items", "x.csv"])
    assert r.exit_code == 2 and "items file not found" in r.output
    r = CliRunner().invoke(
        main, ["ids", "assign", str(tmp_path), "--items", str(tmp_path / "new.csv")]
    )
    assert r.exit_code == 2 and "written by `mmsid tokenize`" in r.output
