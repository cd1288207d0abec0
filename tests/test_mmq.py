"""MMQ: gradients reach every expert and gate, the orthogonality term, the RQ-VAE special
case, missing modalities, soft indexing, and stage 2 reading only the training split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsid.quantizers.mmq import MMQ, MMQConfig, MMQTokenizer, sid_length
from mmsid.quantizers.rqvae import RQVAE, RQVAEConfig

SMALL = dict(codebook_size=8, latent_dim=4, hidden=(16,), dead_code_threshold=0)


def two_modalities(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randn(n, 5, generator=g)


def init(model: MMQ, x: torch.Tensor) -> None:
    with torch.no_grad():
        for q, z in model.quantizers_and_latents(x):
            q.init_from_data(z)


def test_gradient_reaches_every_expert_and_gate():
    a, b = two_modalities()
    x = torch.cat([a, b], 1)
    cfg = MMQConfig(modality_dims=(6, 5), n_shared=2, n_specific=2, **SMALL)
    model = MMQ(11, cfg)
    init(model, x)
    out = model(x)
    assert out["codes"].shape == (64, sid_length(cfg)) == (64, 6)
    sum(out["losses"].values()).backward()
    groups = [
        *model.shared,
        *[e for per_m in model.specific for e in per_m],
        model.gate_shared,
        *model.gate_specific,
        *model.decoders,
    ]
    for mod in groups:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())


def test_soft_indexing_sends_a_downstream_gradient_to_codebooks():
    a, b = two_modalities()
    x = torch.cat([a, b], 1)
    model = MMQ(11, MMQConfig(modality_dims=(6, 5), **SMALL))
    init(model, x)
    hard = model(x)["q"]
    soft = model(x, tau=0.5)["q"]
    assert torch.allclose(hard, soft)  # the forward value is the hard code either way
    model.zero_grad()
    soft.pow(2).sum().backward()  # a stand-in downstream loss
    for q in [*model.q_shared, *[q for per_m in model.q_specific for q in per_m]]:
        assert q.codebooks.grad.abs().sum() > 0
    assert model.shared[0][0].weight.grad.abs().sum() > 0


def test_orthogonality_zero_for_orthogonal_positive_otherwise():
    model = MMQ(11, MMQConfig(modality_dims=(6, 5), **SMALL))
    mask = torch.ones(3, 2)
    e = torch.eye(4)[:3]  # shared = e_i
    ortho = torch.roll(torch.eye(4), 1, dims=1)[:3]  # specific = e_{i+1}: orthogonal
    assert float(model.orthogonality([e], [[ortho], [ortho]], mask)) == pytest.approx(0.0)
    assert float(model.orthogonality([e], [[e + 0.3 * ortho], [ortho]], mask)) > 0.1
    # an absent modality's pairs are not counted
    only_first = torch.tensor([[1.0, 0.0]] * 3)
    assert float(model.orthogonality([e], [[ortho], [e]], only_first)) == pytest.approx(0.0)


def test_one_modality_no_shared_is_an_rqvae():
    torch.manual_seed(0)
    x = torch.randn(128, 12)
    rq_cfg = RQVAEConfig(levels=2, codebook_size=8, latent_dim=4, hidden=(16,))
    rqvae = RQVAE(12, rq_cfg)
    mmq = MMQ(12, MMQConfig(n_shared=0, n_specific=1, specific_levels=2, lambda_orth=0.0, **SMALL))
    with torch.no_grad():
        rqvae.rq.init_from_data(rqvae.encoder(x))
    mmq.specific[0][0].load_state_dict(rqvae.encoder.state_dict())
    mmq.q_specific[0][0].load_state_dict(rqvae.rq.state_dict())
    mmq.decoders[0].load_state_dict(rqvae.decoder.state_dict())
    x_hat, losses, codes = rqvae(x)
    out = mmq(x)
    assert torch.equal(out["codes"], codes)
    assert torch.allclose(out["recon"][0], x_hat)
    for k in ("reconstruction", "codebook", "commitment"):
        assert float(out["losses"][k].detach()) == pytest.approx(
            float(losses[k].detach()), rel=1e-6
        )
    assert torch.equal(mmq.encode(x), rqvae.rq.encode(rqvae.encoder(x)))


def test_missing_modality_neither_crashes_nor_reconstructs():
    a, b = two_modalities()
    b[:] = 0.0  # every item lacks modality 2
    x = torch.cat([a, b], 1)
    model = MMQ(11, MMQConfig(modality_dims=(6, 5), **SMALL))
    init(model, x)
    out = model(x)
    assert torch.isfinite(sum(out["losses"].values()))
    out["losses"]["reconstruction"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.decoders[1].parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.decoders[0].parameters())


def test_tokenizer_fit_finetune_save_load(tmp_path):
    a, b = two_modalities(n=200)
    x = torch.cat([a, b], 1).numpy()
    tok = MMQTokenizer(MMQConfig(modality_dims=(6, 5), epochs=3, finetune_epochs=2, **SMALL))
    tok.fit(x, progress=False)
    assert tok.levels == 3 and tok.transform(x).shape == (200, 3)
    pairs = np.stack([np.arange(199), np.arange(1, 200)], 1)
    report = tok.finetune(x, pairs, progress=False)
    assert 0.0 <= report["sid_changed_share"] <= 1.0 and report["pairs"] == 199
    assert {h["stage"] for h in tok.history} == {1, 2}
    assert "behavior" in tok.history[-1]
    tok.save(tmp_path / "t.pt")
    again = MMQTokenizer.load(tmp_path / "t.pt")
    assert np.array_equal(again.transform(x), tok.transform(x))


def test_one_modality_default_layout_is_as_long_as_the_other_tokenizers():
    """A text-only catalogue: the shared expert takes the missing levels (2 + 1 codes, the
    same SID length as RQ-VAE's 3), and both stages run on it; layouts of 2 or 3 modalities
    are unchanged (M + 1 one-level codes)."""
    from mmsid.tokenize import TokenizeConfig, mmq_settings

    cfg = TokenizeConfig(dataset="x", method="mmq", levels=3, epochs=3, finetune_epochs=1)
    one = mmq_settings(cfg, (6,))
    assert one["shared_levels"] == 2 and sid_length(MMQConfig(**one)) == 3
    for dims in ((6, 5), (6, 5, 4)):
        s = mmq_settings(cfg, dims)
        assert s["shared_levels"] == 1 and sid_length(MMQConfig(**s)) == len(dims) + 1
    shared_only = mmq_settings(TokenizeConfig(dataset="x", ablation="shared-only"), (6,))
    assert sid_length(MMQConfig(**shared_only)) == 3
    x = two_modalities(n=200)[0].numpy()
    tok = MMQTokenizer(MMQConfig(**{**one, **SMALL}))
    tok.fit(x, progress=False)
    assert tok.transform(x).shape == (200, 3)
    pairs = np.stack([np.arange(199), np.arange(1, 200)], 1)
    assert tok.finetune(x, pairs, progress=False)["pairs"] == 199
