"""benchmarks/results/ holds only figures a committed command regenerates, each stamped with
its command, commit and seeds (benchmarks/reproduce.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "benchmarks" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_results_file_is_registered_and_stamped():
    assert _reproduce().audit() == []


def test_audit_flags_unregistered_and_unstamped_files(tmp_path, monkeypatch):
    rep = _reproduce()
    monkeypatch.setattr(rep, "RESULTS", tmp_path)
    (tmp_path / "orphan.md").write_text("# a table from a temp folder\n")
    (tmp_path / "smoke.json").write_text(json.dumps({"command": "x", "seeds": [0]}))
    (tmp_path / "tables.json").write_text(
        json.dumps({"command": "x", "commit": "abc+dirty", "seeds": [0]})
    )
    reg = rep.ENTRIES["scoring"][0]
    (tmp_path / "scoring.json").write_text(
        json.dumps({"command": reg.replace("2", "1"), "commit": "abc", "seeds": [0]})
    )
    (tmp_path / "stability.json").write_text(  # a thread setting changes no results file
        json.dumps(
            {
                "command": "OMP_NUM_THREADS=1 " + rep.ENTRIES["stability"][0],
                "commit": "a",
                "seeds": [0],
            }
        )
    )
    problems = "\n".join(rep.audit())
    assert "orphan.md: no committed command" in problems
    assert "smoke.json: lacks ['commit']" in problems
    assert "tables.json: made from uncommitted code" in problems
    assert f"scoring.json: made by `{reg.replace('2', '1')}`, registered as `{reg}`" in problems
    assert "stability.json" not in problems


def test_compare_reports_changed_numbers_only():
    rep = _reproduce()
    a = {"x": {"auc": 0.71, "seconds": 3.0}, "n": [1, 2], "nan": float("nan")}
    b = {"x": {"auc": 0.71 + 1e-9, "seconds": 9.0}, "n": [1, 2], "nan": float("nan")}
    assert rep.compare(a, b, 1e-6, ("seconds",)) == []
    c = {"x": {"auc": 0.72, "seconds": 3.0}, "n": [1, 3], "nan": float("nan")}
    assert len(rep.compare(a, c, 1e-6, ("seconds",))) == 2
