"""The CPU GEMM backend choice behind SID assignment (mmsid.quantizers.gemm)."""

from __future__ import annotations

import json

import pytest
import torch

from mmsid.errors import ConfigError
from mmsid.quantizers import gemm


@pytest.fixture(autouse=True)
def _fresh_choice(monkeypatch):
    monkeypatch.setattr(gemm, "_chosen", {})  # no choice carried over between tests


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("bias_rows", [False, True])
def test_addmm_equals_torch(backend, bias_rows, monkeypatch):
    monkeypatch.setenv(gemm.ENV, backend)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 40, generator=g)[::2]  # a strided view, as chunks of a table can be
    w = torch.randn(17, 40, generator=g).t()  # (d, K), transposed like a codebook
    bias = torch.randn(150, 17, generator=g) if bias_rows else torch.randn(17, generator=g)
    before = (x.clone(), w.clone(), bias.clone())
    out = gemm.addmm(bias, x, w)
    assert gemm.backend_for(x, w) == backend
    assert out.shape == (150, 17) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.addmm(bias, x, w), rtol=1e-5, atol=1e-5)
    for a, b in zip((x, w, bias), before):
        assert torch.equal(a, b)  # inputs untouched


def test_autograd_and_other_dtypes_stay_on_torch(monkeypatch):
    monkeypatch.setenv(gemm.ENV, "numpy")
    w = torch.randn(8, 4)
    x = torch.randn(5, 8, requires_grad=True)
    assert gemm.backend_for(x, w) == "torch"
    gemm.addmm(torch.zeros(4), x, w).sum().backward()  # gradients still flow
    torch.testing.assert_close(x.grad, w.sum(1).expand(5, -1))
    with torch.no_grad():
        assert gemm.backend_for(x, w) == "numpy"
    assert gemm.backend_for(x.detach().double(), w.double()) == "torch"


def test_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv(gemm.ENV, "mkl")
    with pytest.raises(ConfigError, match="MMSID_CPU_GEMM"):
        gemm.cpu_backend()


def test_auto_measures_once_and_caches_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv(gemm.ENV, "auto")
    monkeypatch.setenv("MMSID_CACHE_DIR", str(tmp_path))
    calls = []
    real = gemm.measure

    def counted(*a, **k):
        calls.append(1)
        return real(shape=(64, 32, 16), rounds=3)

    monkeypatch.setattr(gemm, "measure", counted)
    first = gemm.cpu_backend()
    assert first in ("torch", "numpy") and calls == [1]
    table = json.loads((tmp_path / "cpu_gemm.json").read_text())
    entry = table[gemm.calibration_key()]
    assert entry["backend"] == first
    rate = entry["gflop_per_s"]
    assert (first == "numpy") == (rate["numpy"] >= gemm.MARGIN * rate["torch"])
    # a new process (no in-process choice) reads the cache instead of measuring again
    monkeypatch.setattr(gemm, "_chosen", {})
    assert gemm.cpu_backend() == first and calls == [1]
    # the cached entry is what decides, whatever this machine would measure
    other = "torch" if first == "numpy" else "numpy"
    table[gemm.calibration_key()]["backend"] = other
    (tmp_path / "cpu_gemm.json").write_text(json.dumps(table))
    monkeypatch.setattr(gemm, "_chosen", {})
    assert gemm.cpu_backend() == other and calls == [1]


def test_unreadable_cache_measures_again(tmp_path, monkeypatch):
    monkeypatch.setenv(gemm.ENV, "auto")
    monkeypatch.setenv("MMSID_CACHE_DIR", str(tmp_path))
    (tmp_path / "cpu_gemm.json").write_text("{not json")
    monkeypatch.setattr(gemm, "measure", lambda: {"torch": 1.0, "numpy": 2.0})
    assert gemm.cpu_backend() == "numpy"  # 2x faster clears the margin
    monkeypatch.setattr(gemm, "_chosen", {})
    monkeypatch.setattr(gemm, "measure", lambda: {"torch": 1.0, "numpy": 1.01})
    (tmp_path / "cpu_gemm.json").unlink()
    assert gemm.cpu_backend() == "torch"  # within the margin: torch stays
