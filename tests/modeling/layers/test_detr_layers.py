"""Shared transformer layers: sine position encoding, MLP, encoder/decoder blocks."""

import pytest
import torch

from sgg.modeling.layers import MLP, PositionEmbeddingSine, TransformerDecoderLayer, TransformerEncoder


def test_sine_position_encoding_shape_and_padding_invariance():
    pe = PositionEmbeddingSine(8, normalize=True)
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)
    mask[1, :, 3:] = True  # image 1 is 4x3, padded to 4x6
    pos = pe(mask)
    assert pos.shape == (2, 16, 4, 6)
    # The valid part of the padded image is encoded like an unpadded image of its own size.
    alone = pe(torch.zeros(1, 4, 3, dtype=torch.bool))
    assert torch.allclose(pos[1, :, :, :3], alone[0], atol=1e-5)
    assert not torch.allclose(pos[0, :, :, :3], alone[0], atol=1e-3)
    with pytest.raises(ValueError, match="even"):
        PositionEmbeddingSine(7)


def test_mlp_and_transformer_blocks():
    mlp = MLP(8, 16, 4, 3)
    assert len(mlp.layers) == 3 and mlp(torch.randn(5, 2, 8)).shape == (5, 2, 4)
    with pytest.raises(ValueError):
        MLP(8, 16, 4, 0)
    enc = TransformerEncoder(16, 4, 2, 32, 0.0).eval()
    src, pos = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 7:] = True
    out = enc(src, pos, mask)
    assert out.shape == (2, 10, 16)
    # Padded tokens do not influence the others.
    src2 = src.clone()
    src2[0, 7:] = 100.0
    assert torch.allclose(enc(src2, pos, mask)[0, :7], out[0, :7], atol=1e-5)
    dec = TransformerDecoderLayer(16, 4, 32, 0.0).eval()
    assert dec(torch.zeros(2, 3, 16), out, pos, torch.randn(2, 3, 16), mask).shape == (2, 3, 16)
