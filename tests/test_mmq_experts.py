"""benchmarks/mmq_experts.py: the per-expert report of a real MMQ fit (issue 17) reads every
expert of every stage, with gate masses that are each group's distribution over its experts."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(scope="module")
def fitted_dir(real_data_dir, tmp_path_factory) -> Path:
    """A short MMQ fit with behavior fine-tuning and its control on lfm2k-mm."""
    from mmsid.tokenize import TokenizeConfig, run_tokenize

    out = tmp_path_factory.mktemp("mmq") / "tok"
    cfg = TokenizeConfig(
        dataset="lfm2k-mm",
        method="mmq",
        out=str(out),
        data_dir=str(real_data_dir),
        epochs=3,
        finetune="behavior",
        finetune_epochs=1,
        finetune_pairs=2048,
    )
    with warnings.catch_warnings():  # three modalities: no one-modality warning
        warnings.filterwarnings("error", message="MMQ reads one modality")
        run_tokenize(cfg, progress=False)
    return out


def test_mmq_on_one_modality_warns(real_data_dir, tmp_path):
    """On one modality MMQ's shared and specific experts read the same input: the fit says so
    (amazon-beauty's default text is the case that matters) and still runs."""
    from mmsid.tokenize import TokenizeConfig, run_tokenize

    cfg = TokenizeConfig(
        dataset="lfm2k-mm",
        method="mmq",
        out=str(tmp_path / "tok"),
        data_dir=str(real_data_dir),
        modalities=["text_minilm"],
        epochs=1,
    )
    with pytest.warns(UserWarning, match=r"MMQ reads one modality \('text_minilm'\)"):
        m = run_tokenize(cfg, progress=False)
    assert m["modalities"] == ["text_minilm"]


@pytest.fixture(scope="module")
def fitted(fitted_dir) -> dict:
    return json.loads((fitted_dir / "metrics.json").read_text())


def test_expert_report_covers_every_expert_and_stage(fitted, tmp_path):
    from mmq_experts import expert_lines

    from mmsid.pipeline.experts import expert_facts, experts_plot

    f = expert_facts(fitted)
    experts = [f"{e['group']}/{e['expert']}" for e in fitted["stage1"]["experts"]]
    # 2 shared + 2 per modality (text and two audio embeddings) at the defaults
    assert len(experts) == 8 and len(set(experts)) == 8
    for stage in ("stage1", "stage2", "control"):
        assert [e["expert"] for e in f[stage]] == experts
        for group in {x.split("/")[0] for x in experts}:
            mass = [e["gate_mass"] for e in f[stage] if e["expert"].startswith(group + "/")]
            routed = [e["routed_share"] for e in f[stage] if e["expert"].startswith(group + "/")]
            assert sum(mass) == pytest.approx(1.0, abs=1e-4)
            assert sum(routed) == pytest.approx(1.0, abs=1e-4)
            assert 0.0 <= f["gate_entropy"][stage][group] <= 1.0
        for e in f[stage]:
            assert 0.0 < e["utilization"] <= 1.0
            assert 1.0 <= e["perplexity"] <= f["codebook_size"]
    # the least-used level is what the report shows
    first = fitted["stage1"]["experts"][0]
    assert f["stage1"][0]["utilization"] == min(first["utilization"])

    # the measured shared-vs-specific |cos| of each stage, as the tokenizer reported it
    got = {"stage1": fitted["stage1"], "stage2": fitted["stage2"]}
    got["control"] = fitted["stage2"]["control"]
    for stage, report in got.items():
        assert f["orthogonality"][stage] == report["orthogonality_abs_cos"]
        assert 0.0 <= f["orthogonality"][stage] <= 1.0

    rows = expert_lines("lfm2k-mm", "mmq-ft:1", f)
    assert len(rows) == len(experts) + 2 and rows[-2].count("→") == 4  # one per gate group
    assert all(r.count("(") == 4 for r in rows[:-2])  # the control in every cell
    assert rows[-1].count("→") == 1 and rows[-1].count("(") == 1
    assert f"{f['orthogonality']['stage1']:.3f}" in rows[-1]
    experts_plot("lfm2k-mm", {"mmq-ft:1": f}, tmp_path / "experts.png")
    assert (tmp_path / "experts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_fit_without_fine_tuning_reports_stage_1_only(fitted):
    from mmq_experts import expert_lines

    from mmsid.pipeline.experts import expert_facts

    stage1_only = {k: v for k, v in fitted.items() if k != "stage2"}
    f = expert_facts(stage1_only)
    assert "stage2" not in f and "control" not in f
    assert all("(" not in r and "→" not in r.split("|")[4] for r in expert_lines("x", "mmq:1", f))


def test_a_layout_without_shared_or_specific_parts_reports_no_cosine(fitted):
    """shared-only and specific-only fits measure no shared-vs-specific cosine (NaN): n/a."""
    from mmq_experts import expert_lines

    from mmsid.pipeline.experts import expert_facts

    one_part = {**fitted, "stage1": {**fitted["stage1"], "orthogonality_abs_cos": float("nan")}}
    f = expert_facts({k: v for k, v in one_part.items() if k != "stage2"})
    assert f["orthogonality"] == {"stage1": None}
    assert "abs cos: n/a |" in expert_lines("x", "mmq-ft-shared-only:1", f)[-1]


def test_mmq_fits_reads_one_fit_per_tokenizer_folder(fitted_dir, monkeypatch):
    """MMQ's three ID tables share the mmq-ft fit; other ID types have no experts."""
    import mmq_experts

    asked = []
    monkeypatch.setattr(
        mmq_experts,
        "tokenizer_dir",
        lambda ds, spec, seed: asked.append((spec, seed)) or fitted_dir,
    )
    fits = mmq_experts.mmq_fits("lfm2k-mm", ["rq-vae:8", "mmq-ft:1", "mmq:1", "mmq-ctl:1"])
    assert list(fits) == ["mmq-ft:1"] and asked == [("mmq-ft:1", 0)]
    fits = mmq_experts.mmq_fits("lfm2k-mm", ["mmq:1", "mmq-ft-no-orth:1", "opq:8"])
    assert list(fits) == ["mmq-ft:1", "mmq-ft-no-orth:1"]
    # a fit on other input modalities is another fit, named with them
    fits = mmq_experts.mmq_fits(
        "lfm2k-mm", ["mmq-ft:1/text_minilm", "mmq:1", "mmq-ctl:1/text_minilm"]
    )
    assert list(fits) == ["mmq-ft:1/text_minilm", "mmq-ft:1"]


def test_sid_reports_tables_every_id_type_and_each_fit_once(fitted_dir, tmp_path, monkeypatch):
    """The SID-table and expert sections both benches write (sid_tables.sid_reports):
    a row per ID type read from its table, MMQ's experts once per fit, the plot beside them."""
    import mmq_experts
    import sid_tables

    for mod in (sid_tables, mmq_experts):
        monkeypatch.setattr(mod, "tokenizer_dir", lambda ds, spec, seed: fitted_dir)
    monkeypatch.setattr(sid_tables, "RESULTS", tmp_path)
    store: dict = {}
    ids, experts, sizes = sid_tables.sid_reports("lfm2k-mm", ["mmq-ft:1", "mmq:1"], "x", store)
    assert [r.split(" | ")[1] for r in ids] == ["mmq-ft:1", "mmq:1"]
    assert store["ids"]["mmq-ft:1"]["codes"] == store["ids"]["mmq:1"]["codes"] == 8
    assert 0.0 <= store["ids"]["mmq-ft:1"]["collision_rate"] <= 1.0
    # fine-tuning's shares are MMQ + fine-tuning's; stage 1's row has none
    assert "sid_changed_share" in store["ids"]["mmq-ft:1"]
    assert "sid_changed_share" not in store["ids"]["mmq:1"]
    assert list(store["experts"]) == ["mmq-ft:1"] and len(experts) == 8 + 2
    assert (tmp_path / "x_lfm2k-mm_experts.png").is_file()
    assert sid_tables.sid_reports("lfm2k-mm", [], "y", {}) == ([], [], set())


def test_sid_reports_give_a_row_per_tokenizer_fit_when_seeds_refit(
    fitted_dir, tmp_path, monkeypatch
):
    """With --refit-tokenizers each model seed reads its own fit: one SID-table row per fit
    (what fine-tuning changed differs between fits), the experts from the first one."""
    import mmq_experts
    import sid_tables

    asked = []
    for mod in (sid_tables, mmq_experts):
        monkeypatch.setattr(
            mod, "tokenizer_dir", lambda ds, spec, seed: asked.append(seed) or fitted_dir
        )
    monkeypatch.setattr(sid_tables, "RESULTS", tmp_path)
    store: dict = {}
    ids, experts, _ = sid_tables.sid_reports(
        "lfm2k-mm", ["mmq-ft:1", "opq:8"], "x", store, (0, 1, 2)
    )
    labels = [r.split(" | ")[1] for r in ids]
    assert labels == [f"{s} (tokenizer seed {t})" for s in ("mmq-ft:1", "opq:8") for t in (0, 1, 2)]
    assert list(store["ids"]) == labels
    assert asked == [0, 1, 2, 0, 1, 2, 0]  # the last: the expert table's fit
    assert len(experts) == 8 + 2
    head = sid_tables.id_table(ids, (0, 1, 2))[1]
    assert "tokenizer seed 0, 1, 2" in head


def test_psrq_rows_state_the_alpha_their_fit_used(fitted_dir, tmp_path, monkeypatch):
    """Issue 17 asks PSRQ's rows to state alpha: read from the fit's config, not assumed."""
    import shutil

    import sid_tables
    import yaml

    psrq = tmp_path / "psrq"
    psrq.mkdir()
    for name in ("sids.parquet", "metrics.json"):
        shutil.copy(fitted_dir / name, psrq / name)
    (psrq / "config.yaml").write_text(yaml.safe_dump({"method": "psrq", "alpha": 0.5}))
    monkeypatch.setattr(sid_tables, "tokenizer_dir", lambda ds, spec, seed: psrq)
    facts = sid_tables.id_facts("lfm2k-mm", "psrq:8")
    assert facts["alpha"] == 0.5
    assert sid_tables.id_line("lfm2k-mm", "psrq:8", facts).split(" | ")[1] == "psrq:8 (alpha 0.5)"
    monkeypatch.setattr(sid_tables, "tokenizer_dir", lambda ds, spec, seed: fitted_dir)
    assert "alpha" not in sid_tables.id_facts("lfm2k-mm", "mmq:1")


def test_the_main_jobs_expert_report_averages_the_seeds_fits(fitted):
    """mmsid.pipeline.experts.mean_facts: each number the mean over the seeds' fits that have
    that stage, gate entropy per group alike; a cosine any fit lacks stays n/a."""
    import copy

    from mmsid.pipeline.experts import expert_facts, mean_facts

    a = expert_facts(fitted)
    b = copy.deepcopy(a)
    for stage in ("stage1", "stage2", "control"):
        for e in b[stage]:
            e["gate_mass"] = 1.0 - e["gate_mass"]
            e["perplexity"] += 10.0
        b["gate_entropy"][stage] = {g: 0.0 for g in a["gate_entropy"][stage]}
    b["orthogonality"]["stage2"] = None
    m = mean_facts([a, b])
    assert m["seeds"] == 2 and m["codebook_size"] == a["codebook_size"]
    for stage in ("stage1", "stage2", "control"):
        assert [e["expert"] for e in m[stage]] == [e["expert"] for e in a[stage]]
        for got, x in zip(m[stage], a[stage]):
            assert got["gate_mass"] == pytest.approx(0.5)
            assert got["perplexity"] == pytest.approx(x["perplexity"] + 5.0)
            assert got["utilization"] == pytest.approx(x["utilization"])
        for g, v in a["gate_entropy"][stage].items():
            assert m["gate_entropy"][stage][g] == pytest.approx(v / 2)
    assert m["orthogonality"]["stage1"] == pytest.approx(a["orthogonality"]["stage1"])
    assert m["orthogonality"]["stage2"] is None
    # a seed fitted without fine-tuning: the fine-tuned cells average the seeds that have them
    one = mean_facts([a, {k: v for k, v in b.items() if k not in ("stage2", "control")}])
    assert one["stage2"][0]["gate_mass"] == pytest.approx(a["stage2"][0]["gate_mass"])
