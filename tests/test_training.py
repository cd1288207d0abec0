"""The shared training loop (mmsid.training): learning-rate schedules, the optimisers, and a
budget in optimiser steps that a resumed run honours as an uninterrupted one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmsid.training import LoopConfig, lr_factor, train


def test_cosine_schedule():
    cfg = LoopConfig(lr=1.0, schedule="cosine", warmup_steps=10)
    f = [lr_factor(cfg, s, 110) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.5, abs=0.02) and f[-1] < 0.01
    assert all(a >= b for a, b in zip(f[9:], f[10:]))
    assert lr_factor(LoopConfig(), 5, 10) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(LoopConfig(schedule="step"), 0, 10)


def test_rsqrt_schedule_is_t5s():
    """Held at the peak for ``warmup_steps`` steps (no ramp), then lr * sqrt(w / step): TIGER's
    0.01 for 10k steps, 0.005 at 40k."""
    cfg = LoopConfig(lr=0.01, schedule="rsqrt", warmup_steps=10_000)
    assert lr_factor(cfg, 0, 1) == 1.0 and lr_factor(cfg, 9_999, 1) == 1.0
    assert lr_factor(cfg, 39_999, 1) == pytest.approx(0.5)
    assert lr_factor(cfg, 159_999, 1) == pytest.approx(0.25)
    f = [lr_factor(cfg, s, 1) for s in range(0, 200_000, 997)]
    assert all(a >= b for a, b in zip(f, f[1:]))


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Linear(6, 1)

    def loss(self, batch):
        return ((self.w(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()


def _fit(cfg: LoopConfig, ckpt=None, evaluate=None) -> tuple[Linear, list[dict]]:
    g = np.random.default_rng(0)
    x = torch.from_numpy(g.normal(size=(90, 6)).astype(np.float32))
    y = x @ torch.arange(6.0) + 1.0
    model = Linear()
    history = train(
        model,
        cfg,
        batches=lambda rng: np.array_split(rng.permutation(90), 3),  # 3 steps per epoch
        make_batch=lambda idx: {"x": x[idx], "y": y[idx]},
        evaluate=evaluate or (lambda m: {"neg_mse": -float(m.loss({"x": x, "y": y}).detach())}),
        select="neg_mse",
        checkpoint=ckpt,
        progress=False,
    )
    return model, history


def test_a_step_budget_ends_at_an_epoch_end_and_resumes_exactly(tmp_path):
    """max_steps 7 at 3 steps per epoch stops after epoch 3 (9 steps); extending the budget
    to 12 resumes the checkpoint (optimiser state included) and lands where one run with
    budget 12 lands; for AdamW and Adafactor, which are different optimisers."""
    final = {}
    for optimizer in ("adamw", "adafactor"):
        base = dict(epochs=100, lr=0.05, optimizer=optimizer, schedule="rsqrt", warmup_steps=4)
        m1, h1 = _fit(LoopConfig(**base, max_steps=7), tmp_path / f"{optimizer}.pt")
        assert [r["steps"] for r in h1] == [3, 3, 3] and h1[-1]["stopped"] == "max_steps"
        m2, h2 = _fit(LoopConfig(**base, max_steps=12), tmp_path / f"{optimizer}.pt")
        m3, h3 = _fit(LoopConfig(**base, max_steps=12))  # uninterrupted
        assert len(h2) == len(h3) == 4 and h3[-1]["stopped"] == "max_steps"
        for a, b in zip(m2.state_dict().values(), m3.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        assert h3[-1]["valid"]["neg_mse"] > h3[0]["valid"]["neg_mse"]  # it learns
        final[optimizer] = m3.w.weight.detach()
    assert not torch.allclose(final["adamw"], final["adafactor"])
    with pytest.raises(ValueError, match="optimizer"):
        _fit(LoopConfig(optimizer="sgd"))


def test_a_larger_epoch_cap_extends_a_capped_run_and_keeps_an_early_stopped_one(tmp_path):
    """What the benchmarks rely on when they raise their shared epoch cap: at a constant
    learning rate, a run the cap ended resumes and lands where one run at the larger cap lands,
    and a run that patience ended trains no further (and is not validated again)."""
    base = dict(lr=0.05, patience=2)
    m1, h1 = _fit(LoopConfig(**base, epochs=3), tmp_path / "capped.pt")
    assert len(h1) == 3 and h1[-1]["stopped"] == "epochs"
    m2, h2 = _fit(LoopConfig(**base, epochs=6), tmp_path / "capped.pt")
    m3, h3 = _fit(LoopConfig(**base, epochs=6))
    assert len(h2) == len(h3) == 6 and h2[-1]["stopped"] == h3[-1]["stopped"] == "epochs"
    for a, b in zip(m2.state_dict().values(), m3.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(m1.w.weight, m2.w.weight)  # the extension trained

    scores = iter([1.0, 2.0, 2.0, 2.0, 2.0, 2.0])  # improves once, then plateaus
    m4, h4 = _fit(
        LoopConfig(**base, epochs=5), tmp_path / "stopped.pt", lambda m: {"neg_mse": next(scores)}
    )
    assert len(h4) == 4 and h4[-1]["stopped"] == "early_stopping"  # best at 2, 2 stale epochs
    # patience running out on the cap's last epoch is convergence, not the cap
    scores = iter([1.0, 2.0, 2.0, 2.0])
    _, h = _fit(LoopConfig(**base, epochs=4), evaluate=lambda m: {"neg_mse": next(scores)})
    assert len(h) == 4 and h[-1]["stopped"] == "early_stopping"
    scores = iter([1.0, 2.0, 2.0])  # one stale epoch when the cap came: capped
    _, h = _fit(LoopConfig(**base, epochs=3), evaluate=lambda m: {"neg_mse": next(scores)})
    assert len(h) == 3 and h[-1]["stopped"] == "epochs"

    def never(m):
        raise AssertionError("a run patience ended was validated again")

    m5, h5 = _fit(LoopConfig(**base, epochs=50), tmp_path / "stopped.pt", never)
    assert len(h5) == 4 and h5[-1]["stopped"] == "early_stopping"
    for a, b in zip(m4.state_dict().values(), m5.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_min_epochs_holds_off_early_stopping_and_leaves_later_stops_alone(tmp_path):
    """An early, noisy validation peak ends a run at patience 2 after 3 epochs; with
    min_epochs 6 the same run goes on to epoch 6 and, resumed from the stopped run's checkpoint,
    lands where one uninterrupted run with min_epochs lands. A run that patience ends after
    min_epochs is the same with it and without it (what lets a benchmark re-run only the
    runs the rule changes)."""
    peak = [3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # best at epoch 1, then flat

    def scores(seq):
        it = iter(seq)
        return lambda m: {"neg_mse": next(it)}

    base = dict(lr=0.05, patience=2, epochs=10)
    _, h = _fit(LoopConfig(**base), tmp_path / "peak.pt", scores(peak))
    assert len(h) == 3 and h[-1]["stopped"] == "early_stopping"
    m1, h1 = _fit(LoopConfig(**base, min_epochs=6), tmp_path / "peak.pt", scores(peak[3:]))
    m2, h2 = _fit(LoopConfig(**base, min_epochs=6), evaluate=scores(peak))
    assert len(h1) == len(h2) == 6 and h2[-1]["stopped"] == "early_stopping"
    assert [r["valid"] for r in h1] == [r["valid"] for r in h2]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a late stop: improves up to epoch 5, then flat; patience ends it at 7 either way
    late = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    m3, h3 = _fit(LoopConfig(**base), evaluate=scores(late))
    m4, h4 = _fit(LoopConfig(**base, min_epochs=6), evaluate=scores(late))
    assert len(h3) == len(h4) == 7 and h3[-1]["stopped"] == h4[-1]["stopped"] == "early_stopping"
    for a, b in zip(m3.state_dict().values(), m4.state_dict().values(), strict=True):
        assert torch.equal(a, b)
