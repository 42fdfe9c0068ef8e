"""SimpleTrainer._max_abs (the per-step finite checks) equals torch's inf-norm exactly, NaN / Inf / empty included."""

import pytest
import torch

from sgg.engine.train_loop import SimpleTrainer


def _inf_norm(tensors):
    return torch.nn.utils.get_total_norm(tensors, norm_type=float("inf")).float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_max_abs_equals_the_inf_norm(dtype):
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(shape, generator=g).to(dtype) * s for shape, s in
               (((3, 4), 1.0), ((0,), 1.0), ((7,), 100.0), ((2, 3, 5), 0.01), ((1,), -250.0))]
    # torch's foreach inf-norm refuses empty tensors (no identity); they hold no value, so they are skipped here.
    assert torch.equal(SimpleTrainer._max_abs(tensors), _inf_norm([t for t in tensors if t.numel()]))
    neg = [torch.tensor([-5.0, 2.0], dtype=dtype)]  # the maximum |x| comes from the most negative value
    assert float(SimpleTrainer._max_abs(neg)) == 5.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_max_abs_keeps_nonfinite_values(bad):
    tensors = [torch.randn(10), torch.randn(4, 4)]
    tensors[1][2, 3] = bad
    got, want = SimpleTrainer._max_abs(tensors), _inf_norm(tensors)
    assert not torch.isfinite(got)
    assert bool(got.isnan()) == bool(want.isnan()) and (bool(got.isnan()) or got == want)


def test_max_abs_of_nothing_is_zero():
    assert float(SimpleTrainer._max_abs([])) == 0.0
    assert float(SimpleTrainer._max_abs([torch.zeros(0), torch.zeros(0, 3)])) == 0.0
