"""EMAHook and ExponentialMovingAverage: math, prefix, state round trip, weight swap, clear errors."""

import itertools

import pytest
import torch
from torch import nn

from sgg.engine.ema import EMAHook, ExponentialMovingAverage
from sgg.engine.train_loop import SimpleTrainer


class _TwoPart(nn.Module):
    """``head`` is averaged with prefix 'head.'; ``body`` is trainable but outside the prefix; ``frozen`` is frozen."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.head, self.frozen = nn.Linear(3, 3), nn.Linear(3, 1), nn.Linear(3, 3)
        self.frozen.requires_grad_(False)

    def forward(self, batch):
        x = torch.stack([b["x"] for b in batch])
        return {"loss": ((self.head(self.body(x) + self.frozen(x)) - 1.0) ** 2).mean()}


def _trainer(model, hooks, lr=0.1):
    batch = [{"x": torch.tensor([1.0, -2.0, 0.5])}, {"x": torch.tensor([0.3, 0.1, -1.0])}]
    trainer = SimpleTrainer(model, itertools.repeat(batch), torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=lr))
    trainer.register_hooks(hooks)
    return trainer


def test_ema_math_with_warmup_and_prefix():
    model = _TwoPart()
    hook = EMAHook(decay=0.9, prefix="head.", warmup=True)
    trainer = _trainer(model, [hook])
    expected = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("head.")}
    history = []

    class Recorder(EMAHook.__mro__[1]):  # a plain HookBase that records weights after each step
        def after_step(self):
            history.append({n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("head.")})

    trainer.register_hooks([Recorder()])
    trainer.train(0, 5)
    for n_update, weights in enumerate(history):
        d = min(0.9, (1 + n_update) / (10 + n_update))
        expected = {k: d * v + (1 - d) * weights[k] for k, v in expected.items()}
    assert set(hook.ema.shadow) == {"head.weight", "head.bias"}
    for k, v in expected.items():
        torch.testing.assert_close(hook.ema.shadow[k], v)
        assert not torch.allclose(hook.ema.shadow[k], history[-1][k])  # it really lags the live weights


def test_ema_state_round_trip_and_resume_order():
    model = _TwoPart()
    hook = EMAHook(decay=0.5, prefix="", warmup=False)
    _trainer(model, [hook]).train(0, 3)
    state = hook.state_dict()
    assert state["num_updates"] == 3 and set(state["shadow"]) == {"body.weight", "body.bias", "head.weight",
                                                                  "head.bias"}
    # A resumed run: state is loaded before before_train and must win over the current weights.
    resumed = EMAHook(decay=0.5, prefix="", warmup=False)
    fresh_model = _TwoPart()
    trainer = _trainer(fresh_model, [resumed], lr=0.0)
    resumed.load_state_dict(state)
    trainer.train(3, 4)  # one more update with lr 0: shadow = 0.5 * old + 0.5 * weights
    for k, v in state["shadow"].items():
        w = dict(fresh_model.named_parameters())[k].detach()
        torch.testing.assert_close(resumed.ema.shadow[k], 0.5 * v + 0.5 * w)
    assert resumed.ema.num_updates == 4


def test_averaged_weights_swaps_and_restores():
    model = _TwoPart()
    hook = EMAHook(decay=0.8, prefix="head.", warmup=False)
    trainer = _trainer(model, [hook])  # hooks hold a weak reference: keep the trainer alive
    trainer.train(0, 4)
    live = model.head.weight.detach().clone()
    with hook.averaged_weights() as m:
        assert m is model
        torch.testing.assert_close(model.head.weight.detach(), hook.ema.shadow["head.weight"])
    assert torch.equal(model.head.weight.detach(), live)


def test_bad_prefix_and_decay_are_clear():
    with pytest.raises(ValueError, match="no trainable parameter whose name starts with 'unet.'"):
        ExponentialMovingAverage(_TwoPart(), decay=0.9, prefix="unet.")
    with pytest.raises(ValueError, match=r"DECAY must be in \[0, 1\)"):
        ExponentialMovingAverage(_TwoPart(), decay=1.0)
