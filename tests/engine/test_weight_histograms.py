"""TensorBoard weight / gradient histograms (TENSORBOARD.HISTOGRAM_*) through the real trainer, the storage's raw
histogram, and the seed's EarlyStopping(patience, min_delta, monitor) semantics of the hook."""

import glob
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sgg.engine.hooks import EarlyStopping
from sgg.utils.events import EventStorage
from tests.engine.helpers import TOY_CFG, load_model_state, run_cli


def test_histograms_every_n_iterations_through_the_event_writer(tmp_path):
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "6", "TEST.EVAL_PERIOD", "0",
                "LOG_PERIOD", "4", "TENSORBOARD.HISTOGRAM_PERIOD", "3", "TENSORBOARD.HISTOGRAM_BINS", "16",
                "TENSORBOARD.HISTOGRAM_GRADIENTS", "True")
    assert r.returncode == 0, r.stderr
    (events,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    acc = EventAccumulator(events, size_guidance={"histograms": 0})
    acc.Reload()
    tags = acc.Tags()["histograms"]
    assert sorted(tags) == ["grads/backbone.0.bias", "grads/backbone.0.weight", "grads/head.bias", "grads/head.weight",
                            "weights/backbone.0.bias", "weights/backbone.0.weight", "weights/head.bias",
                            "weights/head.weight"]
    final = load_model_state(tmp_path / "model_final.pth")["backbone.0.weight"]
    hist = acc.Histograms("weights/backbone.0.weight")
    assert [h.step for h in hist] == [2, 5]  # every 3 iterations
    last = hist[-1].histogram_value
    assert last.num == final.numel() == sum(last.bucket) and len(last.bucket) == 16
    assert last.min == pytest.approx(float(final.min())) and last.sum == pytest.approx(float(final.sum()), abs=1e-4)
    assert acc.Tags()["scalars"] and "grad_norm" in acc.Tags()["scalars"]  # scalars are still written


def test_histograms_are_off_by_default(tmp_path):
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0")
    assert r.returncode == 0, r.stderr
    (events,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    acc = EventAccumulator(events)
    acc.Reload()
    assert acc.Tags()["histograms"] == []


def test_storage_histogram_is_exact():
    with EventStorage(7) as storage:
        storage.put_histogram("w", torch.tensor([[0.0, 1.0], [1.0, 3.0]]), bins=3)
        storage.put_histogram("const", torch.full((5,), 2.0), bins=4)
        (h, c) = storage.histograms()
        assert h["bucket_counts"] == [1.0, 2.0, 1.0] and h["bucket_limits"] == [1.0, 2.0, 3.0]
        assert (h["num"], h["sum"], h["sum_squares"], h["global_step"]) == (4, 5.0, 11.0, 7)
        assert c["num"] == 5 and sum(c["bucket_counts"]) == 5
        storage.clear_histograms()
        assert storage.histograms() == []


def _feed(hook, values):
    """Drive the hook with one fresh evaluation per step; returns the step at which it asked to stop (or None)."""
    stopped = []
    trainer = SimpleNamespace(iter=0, latest_eval=None, request_stop=lambda: stopped.append(trainer.iter))
    hook.trainer = trainer
    for i, v in enumerate(values):
        trainer.iter, trainer.latest_eval = i, (i, {"video_sgg/with/R@20": v})
        hook.after_step()
        if stopped:
            return stopped[0]
    return None


def test_early_stopping_patience_min_delta_and_monitor():
    """The seed's EarlyStopping(patience=10, min_delta=0.001, monitor=...) = SOLVER.EARLY_STOPPING.{PATIENCE,
    MIN_DELTA, METRIC}: an evaluation counts as an improvement only when it beats the best by more than min_delta."""
    # gains of 0.0005 < min_delta do not count: stop after `patience` such evaluations
    assert _feed(EarlyStopping("video_sgg/with/R@20", "max", patience=3, min_delta=0.001),
                 [10.0, 10.0005, 10.0008, 10.0009, 11.0]) == 3
    # a gain above min_delta resets the count
    hook = EarlyStopping("video_sgg/with/R@20", "max", patience=2, min_delta=0.001)
    assert _feed(hook, [10.0, 10.0, 10.01, 10.0, 10.0]) == 4 and hook.best_value == 10.01
    # mode min, and the state a resume restores
    hook = EarlyStopping("video_sgg/with/R@20", "min", patience=2, min_delta=0.5)
    assert _feed(hook, [5.0, 4.0, 3.8]) is None and (hook.best_value, hook.num_bad) == (4.0, 1)
    again = EarlyStopping("video_sgg/with/R@20", "min", patience=2, min_delta=0.5)
    again.load_state_dict(hook.state_dict())
    assert _feed(again, [3.9]) == 0
    with pytest.raises(KeyError, match="not reported by the evaluators"):
        _feed(EarlyStopping("val_recall@20"), [1.0])
