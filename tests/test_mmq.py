"""MMQ: gradients reach every expert and gate, the orthogonality term, the RQ-VAE special
case, missing modalities, soft indexing, and stage 2 reading only the training split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsid.quantizers.mmq import MMQ, MMQConfig, sid_length
from mmsid.quantizers.mmq_tokenizer import MMQTokenizer
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
    assert tok.levels == 6 and tok.transform(x).shape == (200, 6)
    pairs = np.stack([np.arange(199), np.arange(1, 200)], 1)
    report = tok.finetune(x, pairs, progress=False)
    assert 0.0 <= report["sid_changed_share"] <= 1.0 and report["pairs"] == 199
    assert {h["stage"] for h in tok.history} == {1, 2}
    assert "behavior" in tok.history[-1]
    tok.save(tmp_path / "t.pt")
    again = MMQTokenizer.load(tmp_path / "t.pt")
    assert np.array_equal(again.transform(x), tok.transform(x))


def test_default_layout_routes_two_experts_per_group_and_ablations_keep_their_length():
    """Default: 2 shared + 2 specific experts per modality, one level each; the SID holds
    every expert's codes (6 for two modalities, 4 for one); shared-only keeps the full
    model's length, one-expert is the M + 1 layout; both stages run on one modality."""
    from mmsid.tokenize import TokenizeConfig
    from mmsid.tokenize_mmq import mmq_settings

    cfg = TokenizeConfig(dataset="x", method="mmq", epochs=3, finetune_epochs=1)
    for dims, n in (((6,), 4), ((6, 5), 6), ((6, 5, 4), 8)):
        assert sid_length(MMQConfig(**mmq_settings(cfg, dims))) == n
    longer = TokenizeConfig(dataset="x", method="mmq", expert_levels=2)
    assert sid_length(MMQConfig(**mmq_settings(longer, (6, 5)))) == 12

    def layout(ablation, dims=(6, 5)):
        s = mmq_settings(TokenizeConfig(dataset="x", ablation=ablation), dims)
        return s["n_shared"], s["n_specific"], sid_length(MMQConfig(**s))

    assert layout("shared-only") == (6, 0, 6)
    assert layout("specific-only") == (0, 2, 4)
    assert layout("one-expert") == (1, 1, 3)
    soft = mmq_settings(TokenizeConfig(dataset="x", ablation="no-sharpness"), (6, 5))
    full = mmq_settings(TokenizeConfig(dataset="x"), (6, 5))
    assert soft["gate_sharpness"] == 0.0 < full["gate_sharpness"]  # only the term goes
    assert {k: v for k, v in soft.items() if k != "gate_sharpness"} == {
        k: v for k, v in full.items() if k != "gate_sharpness"
    }
    one = mmq_settings(cfg, (6,))
    x = two_modalities(n=200)[0].numpy()
    tok = MMQTokenizer(MMQConfig(**{**one, **SMALL}))
    tok.fit(x, progress=False)
    assert tok.transform(x).shape == (200, 4)
    pairs = np.stack([np.arange(199), np.arange(1, 200)], 1)
    assert tok.finetune(x, pairs, progress=False)["pairs"] == 199


def test_gate_terms_balance_batches_and_sharpen_items():
    """balance is 0 for even use and n - 1 for one expert; entropy is 1 for uniform gates and
    0 for one-hot ones; items without the group's input do not count, and a batch without
    any has neither term."""
    from mmsid.quantizers.mmq import gate_balance, gate_entropy

    on = torch.ones(4)
    uniform = torch.full((4, 2), 0.5)
    onehot_even = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    collapsed = torch.tensor([[1.0, 0.0]] * 4)
    assert float(gate_balance(uniform, on)) == pytest.approx(0.0)
    assert float(gate_balance(onehot_even, on)) == pytest.approx(0.0)
    assert float(gate_balance(collapsed, on)) == pytest.approx(1.0)
    assert float(gate_entropy(uniform, on)) == pytest.approx(1.0)
    assert float(gate_entropy(onehot_even, on)) == pytest.approx(0.0, abs=1e-6)
    half = torch.tensor([1.0, 1.0, 0.0, 0.0])  # the uniform rows are absent
    mixed = torch.cat([collapsed[:2], uniform[:2]])
    assert float(gate_entropy(mixed, half)) == pytest.approx(0.0, abs=1e-6)
    assert float(gate_balance(mixed, half)) == pytest.approx(1.0)
    none = torch.zeros(4)  # a batch with no item of the group: nothing to balance
    assert float(gate_balance(collapsed, none)) == 0.0
    assert float(gate_entropy(collapsed, none)) == 0.0


def test_gate_terms_route_items_and_the_report_names_every_expert():
    """With the sharpness and balance terms on, a fit routes items (mean gate entropy well
    below 1) while using both experts of each group; the diagnostics list every expert with
    its SID positions, gate mass and code utilization."""
    a, b = two_modalities(n=256)
    x = torch.cat([a, b], 1).numpy()
    kw = dict(modality_dims=(6, 5), epochs=30, batch_size=64, lr=1e-2, **SMALL)
    routed = MMQTokenizer(MMQConfig(gate_balance=0.5, gate_sharpness=1.0, **kw))
    routed.fit(x, progress=False)
    flat = MMQTokenizer(MMQConfig(gate_balance=0.0, gate_sharpness=0.0, **kw))
    flat.fit(x, progress=False)
    d, f = routed.diagnostics(x, ["a", "b"]), flat.diagnostics(x, ["a", "b"])
    assert set(d["gates"]) == {"shared", "a", "b"}
    for g in d["gates"]:
        assert d["gates"][g]["entropy"] < f["gates"][g]["entropy"]
        assert d["gates"][g]["entropy"] < 0.5
        assert min(d["gates"][g]["mass"]) > 0.3  # both experts keep a share of the items
    positions = [e["positions"] for e in d["experts"]]
    assert positions == [[i, i + 1] for i in range(6)]
    assert [e["group"] for e in d["experts"]] == ["shared"] * 2 + ["a"] * 2 + ["b"] * 2
    assert all(0 < e["utilization"][0] <= 1 for e in d["experts"])


def test_control_twin_fine_tunes_without_the_behavior_term():
    """The control starts from the same stage-1 weights, and its behavior head gets no
    gradient from the contrastive loss; with the same pairs and shuffles the two differ only
    through that term."""
    a, b = two_modalities(n=200)
    x = torch.cat([a, b], 1).numpy()
    tok = MMQTokenizer(MMQConfig(modality_dims=(6, 5), epochs=3, finetune_epochs=2, **SMALL))
    tok.fit(x, progress=False)
    twin = tok.control()
    assert twin.cfg.behavior_weight == 0.0 and tok.cfg.behavior_weight == 1.0
    assert np.array_equal(twin.transform(x), tok.transform(x))
    pairs = np.stack([np.arange(199), np.arange(1, 200)], 1)
    tok.finetune(x, pairs, progress=False)
    twin.finetune(x, pairs, progress=False)
    assert twin.history[-1]["behavior"] == 0.0 and tok.history[-1]["behavior"] > 0.0
    a0 = dict(twin.module.named_parameters())["shared.0.0.weight"]
    a1 = dict(tok.module.named_parameters())["shared.0.0.weight"]
    assert not torch.equal(a0, a1)  # the behavior term moved the fine-tuned experts


def test_diagnostics_split_each_routed_experts_codes_by_its_gate():
    """perplexity_routed / perplexity_others: an expert's code perplexity over the items its
    gate routes to it and over the rest. Planted gate: the shared group routes by the sign of
    the first input, so the split must follow that sign (reference: the codes of transform)."""
    from mmsid.eval.codebook import perplexity

    a, b = two_modalities(n=256)
    x = torch.cat([a, b], 1).numpy()
    tok = MMQTokenizer(MMQConfig(modality_dims=(6, 5), epochs=2, batch_size=64, **SMALL))
    tok.fit(x, progress=False)
    gate = tok.module.gate_shared  # reads [a; b; presence flags]
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias.zero_()
        gate.weight[0, 0], gate.weight[1, 0] = 10.0, -10.0  # a[:, 0] > 0 -> expert 0
    d = tok.diagnostics(x, ["a", "b"])
    codes = tok.transform(x)
    pos0 = x[:, 0] > 0
    assert 0 < pos0.sum() < len(x)
    for e in d["experts"][:2]:  # the shared experts, at SID positions 0 and 1
        c = codes[:, e["positions"][0] : e["positions"][1]]
        mine = pos0 if e["expert"] == 0 else ~pos0
        assert e["perplexity_routed"] == perplexity(c[mine], 8)
        assert e["perplexity_others"] == perplexity(c[~mine], 8)
    for e in d["experts"][2:]:  # routed by their own (trained) gates: both splits reported
        assert e["perplexity_routed"] is not None or e["perplexity_others"] is not None
