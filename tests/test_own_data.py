"""Own data from the command line: a dataset.yaml (or its folder) wherever a data set name
goes; every bad spec or file ends in DataError with a message (fuzzed with hypothesis, as is
the --set parser)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmsid.errors import ConfigError, DataError, MMSIDError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


@pytest.fixture(scope="module")
def own(real_data_dir, tmp_path_factory):
    from own_data import convert

    return convert(tmp_path_factory.mktemp("own"), real_data_dir)


def test_the_readme_example_runs_from_the_cli(own, lfm2k, tmp_path):
    from mmsid.cli import main
    from mmsid.data import load_dataset

    r = CliRunner().invoke(main, ["data", "describe", str(own)])
    assert r.exit_code == 0, r.output
    assert "lfm2k-own" in r.output and "modality audio" in r.output and "1,425" in r.output
    ds = load_dataset(str(own.parent))  # the folder works too
    assert len(ds.interactions) == len(lfm2k.interactions)
    np.testing.assert_array_equal(ds.modalities["audio"].raw, lfm2k.modalities["audio_vggish"].raw)
    out = tmp_path / "tok"
    r = CliRunner().invoke(
        main, ["tokenize", "--dataset", str(own), "--modality", "audio", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert (out / "sids.parquet").exists() and (out / "ids.sqlite").exists()


@pytest.mark.parametrize(
    "spec, match",
    [
        ("interactions: [1, 2]\n", "'interactions' \\(a file name\\) is required"),
        ("items: items.csv\n", "'interactions'"),
        ("interactions: interactions.csv\ncolour: red\n", "unknown key"),
        ("interactions: interactions.csv\ntext_column: tags\n", "needs an 'items' table"),
        ("interactions: nope.csv\n", "nope.csv: file not found"),
        ("interactions: interactions.csv\nembeddings: {audio: 3}\n", "map modality names"),
        ("interactions: interactions.csv\nembeddings: {audio: missing.npy}\n", "not found"),
        ("[unclosed\n", "not valid YAML"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_specs_name_the_file_and_the_fix(own, tmp_path, spec, match):
    from mmsid.data import load_dataset

    d = tmp_path / "d"
    d.mkdir()
    (d / "interactions.csv").write_text((own.parent / "interactions.csv").read_text())
    (d / "dataset.yaml").write_text(spec)
    with pytest.raises(DataError, match=match):
        load_dataset(str(d / "dataset.yaml"))


def test_run_on_a_bad_spec_writes_nothing(tmp_path):
    from mmsid.cli import main

    (tmp_path / "dataset.yaml").write_text("interactions: none.csv\n")
    r = CliRunner().invoke(
        main, ["run", "--dataset", str(tmp_path / "dataset.yaml"), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "none.csv: file not found" in r.output
    assert not (tmp_path / "o").exists()


_value = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
)  # fmt: skip
_table = st.lists(
    st.lists(st.one_of(st.text(max_size=6), st.integers(-3, 10**20).map(str)), max_size=4),
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    spec=st.dictionaries(
        st.sampled_from(["name", "interactions", "items", "text_column", "embeddings", "x"]),
        _value,
    ),
    interactions=_table,
    header=st.sampled_from(["user,item", "user,item,timestamp", "user,item,rating", "a,b", ""]),
    npy=st.sampled_from([b"", b"not numpy", None]),
)
def test_fuzzed_specs_and_files_end_in_a_data_error(
    tmp_path_factory, spec, interactions, header, npy
):
    from mmsid.data.custom import from_spec

    d = tmp_path_factory.mktemp("fuzz")
    rows = [",".join(r) for r in interactions]
    (d / "inter.csv").write_text("\n".join([header, *rows]) + "\n")
    if npy is not None:
        (d / "e.npy").write_bytes(npy)
    spec = {**spec, "interactions": spec.get("interactions", "inter.csv")}
    if "embeddings" in spec and isinstance(spec["embeddings"], dict):
        spec["embeddings"] = {k: "e.npy" for k in spec["embeddings"]}
    import yaml

    (d / "dataset.yaml").write_text(yaml.safe_dump(spec))
    try:
        from_spec(d / "dataset.yaml")
    except MMSIDError as e:
        assert str(e)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_fuzzed_set_overrides_end_in_a_config_error(pairs):
    from mmsid.config import dotted, merge
    from mmsid.pipeline.config import PipelineConfig

    try:
        merge(PipelineConfig(dataset="ml100k-mm"), dotted(pairs), "--set")
    except (ConfigError, DataError) as e:
        assert str(e)
