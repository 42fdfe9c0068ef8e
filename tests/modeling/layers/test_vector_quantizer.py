"""VQ-VAE: nearest-code assignment, straight-through gradient, codebook update, each loss counted once, statistics."""

import pytest
import torch
import torch.nn.functional as F

from sgg.modeling.layers.vector_quantizer import VQVAE, VectorQuantizer, code_statistics


def test_nearest_code_and_straight_through_gradient():
    vq = VectorQuantizer(num_codes=3, dim=2)
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    z = torch.tensor([[0.9, 0.1], [0.1, 0.8], [0.1, -0.1]], requires_grad=True)
    out = vq(z)
    assert out.codes.tolist() == [1, 2, 0]
    assert torch.equal(out.quantized, vq.codebook.weight[out.codes].detach())  # forward = the codes' values
    # backward: the identity to the encoder output (straight-through), nothing to the codebook from this path
    weights = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    (out.quantized * weights).sum().backward()
    assert torch.equal(z.grad, weights) and vq.codebook.weight.grad is None


def test_codebook_loss_moves_the_chosen_codes_and_commitment_only_the_encoder():
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=4, dim=3, commitment_cost=0.25)
    z = torch.randn(6, 3, requires_grad=True)
    out = vq(z)
    before = vq.codebook.weight.detach().clone()
    dist_before = (vq.codebook.weight[out.codes] - z).pow(2).sum().item()
    opt = torch.optim.SGD(vq.parameters(), lr=0.5)
    out.losses["loss_vq_codebook"].backward()
    opt.step()
    used = torch.unique(out.codes)
    unused = [i for i in range(4) if i not in used.tolist()]
    assert not torch.equal(vq.codebook.weight[used], before[used])  # the chosen codes moved ...
    assert torch.equal(vq.codebook.weight[unused], before[unused])  # ... the others did not
    assert (vq.codebook.weight[out.codes] - z).pow(2).sum().item() < dist_before  # ... towards the encoder outputs
    assert z.grad is None  # the codebook loss does not reach the encoder
    vq.zero_grad()
    vq(z).losses["loss_vq_commitment"].backward()
    assert vq.codebook.weight.grad is None and z.grad is not None  # the commitment loss only reaches the encoder


def test_vqvae_losses_are_each_counted_once():
    torch.manual_seed(0)
    model = VQVAE(in_dim=5, dim=4, num_codes=8, commitment_cost=0.25)
    x = torch.randn(7, 5)
    out = model(x)
    assert sorted(out.losses) == ["loss_vq_codebook", "loss_vq_commitment", "loss_vq_reconstruction"]
    z_e = model.encoder(x)
    z_q = model.quantizer.codebook(out.codes)
    expected = {"loss_vq_reconstruction": F.mse_loss(model.decoder(out.quantized), x),
                "loss_vq_codebook": F.mse_loss(z_q, z_e), "loss_vq_commitment": 0.25 * F.mse_loss(z_e, z_q)}
    for k, v in expected.items():
        assert torch.allclose(out.losses[k], v), k
    # a trainer sums the dict: the total is the three terms once (m3sgg added their sum and the parts: twice)
    assert torch.allclose(sum(out.losses.values()), sum(expected.values()))


def test_usage_and_perplexity():
    perplexity, usage = code_statistics(torch.tensor([0, 1, 2, 3]), 8)
    assert perplexity.item() == pytest.approx(4.0) and usage.item() == pytest.approx(0.5)
    perplexity, usage = code_statistics(torch.tensor([5, 5, 5]), 8)
    assert perplexity.item() == pytest.approx(1.0) and usage.item() == pytest.approx(1 / 8)
    vq = VectorQuantizer(num_codes=8, dim=2)
    out = vq(torch.randn(10, 2))
    assert 1.0 <= out.perplexity.item() <= 8.0 and 0 < out.usage.item() <= 1.0
    with pytest.raises(ValueError, match=r"expected \(N, 2\)"):
        vq(torch.randn(3, 5))


def test_dead_codes_restart_on_encoder_outputs_and_the_usage_is_a_buffer():
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=8, dim=2, restart_dead_codes=True).train()
    assert "usage_ema" in vq.state_dict()
    z = torch.randn(6, 2) * 3 + 10  # far from the U(-1/8, 1/8) initial codes
    out = vq(z)
    # first training call: every code was "dead" -> all moved next to encoder outputs, several codes get used
    assert (torch.cdist(vq.codebook.weight, z).min(1).values < 0.5).all()
    assert len(torch.unique(out.codes)) > 1 and torch.isclose(vq.usage_ema.sum(), torch.tensor(0.1))
    without = VectorQuantizer(num_codes=8, dim=2)
    without.load_state_dict({"codebook.weight": torch.zeros(8, 2) + torch.arange(8.0)[:, None] * 1e-3})
    assert len(torch.unique(without(z).codes)) == 1  # the collapse the restart prevents
    before = vq.codebook.weight.detach().clone()
    with torch.no_grad():
        vq(z)
    vq.eval()(z)
    assert torch.equal(vq.codebook.weight, before)  # no restart outside training


def test_normalized_codes_bound_the_losses():
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=8, dim=4, normalize=True)
    z = torch.randn(10, 4) * 1000  # huge encoder outputs: plain VQ losses would be ~1e6
    out = vq(z)
    assert torch.allclose(out.quantized.norm(dim=1), torch.ones(10), atol=1e-5)
    assert all(0 <= v.item() <= 4 for v in out.losses.values())
    cosine = torch.nn.functional.normalize(z, dim=1) @ torch.nn.functional.normalize(vq.codebook.weight, dim=1).t()
    assert torch.equal(out.codes, cosine.argmax(1))  # nearest unit code = largest cosine
    assert vq(z * 0.001).codes.tolist() == out.codes.tolist()  # scale-free
