"""FLOP counting on list-of-dict inputs (sgg.utils.analysis): flattening, the adapter, and hand-computed totals."""

import torch
from torch import nn

from sgg.utils.analysis import count_flops, flatten_tensors


class DictModel(nn.Module):
    """Takes sgg-style inputs: a list of dicts with a tensor and a file name."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, batch):
        x = torch.stack([b["x"] for b in batch])  # (B, L, 8)
        h = self.fc(x)
        out, _ = self.attn(h, h, h, need_weights=False)
        return [{"y": o, "name": b["file_name"]} for o, b in zip(out, batch)]


def test_flatten_and_rebuild_keep_non_tensors_and_ints():
    batch = [{"x": torch.ones(2), "id": 3, "name": "a.jpg", "pair": (torch.zeros(1), 7)}]
    tensors, rebuild = flatten_tensors(batch)
    assert len(tensors) == 2
    again = rebuild([t + 1 for t in tensors])
    assert again[0]["id"] == 3 and again[0]["name"] == "a.jpg" and again[0]["pair"][1] == 7
    assert torch.equal(again[0]["x"], torch.full((2,), 2.0))


def test_flops_of_linear_and_fused_attention_are_hand_computed():
    batch = [{"x": torch.randn(5, 8), "file_name": f"{i}.jpg"} for i in range(3)]
    b, length, d = 3, 5, 4
    linear = b * length * 8 * 4
    projections = 4 * b * length * d * d  # in_proj (q, k, v) + out_proj
    attention = b * 2 * length * length * (2 + 2)  # 2 heads of width 2: QK^T + AV
    # inference takes nn.MultiheadAttention's fused fast path (one op for projections + attention)
    result = count_flops(DictModel(), batch)
    assert result["by_operator"]["_native_multi_head_attention"] == projections + attention
    assert result["total"] == linear + projections + attention and result["by_module"]["fc"] == linear
    # the batched-attention kernel alone (as the transformer layers call it)
    q, k, v = torch.randn(3, 2, 5, 2), torch.randn(3, 2, 7, 2), torch.randn(3, 2, 7, 3)

    class SDPA(nn.Module):
        def forward(self, batch):
            return torch.nn.functional.scaled_dot_product_attention(batch["q"], batch["k"], batch["v"])

    assert count_flops(SDPA(), {"q": q, "k": k, "v": v})["total"] == 3 * 2 * 5 * 7 * (2 + 3)
