"""RepeatFactorTrainingSampler: predicate-frequency repeat factors, epoch statistics, ranks, resume."""

import itertools

import numpy as np
import pytest

from sgg.config import get_cfg
from sgg.data.samplers import SAMPLER_REGISTRY, RepeatFactorTrainingSampler
from sgg.data.samplers.repeat_factor import predicate_repeat_factors


def dicts_with(predicates_per_image):
    return [{"relations": np.array([[0, 1, p] for p in preds], dtype=np.int64).reshape(-1, 3)}
            for preds in predicates_per_image]


def test_repeat_factors_follow_predicate_image_frequency():
    # predicate 0 in 3 of 4 images (f = .75), predicate 1 in 1 image (f = .25), image 3 has no relation
    dicts = dicts_with([[0, 0], [0], [0, 1], []])
    factors = predicate_repeat_factors(dicts, repeat_threshold=0.5)
    np.testing.assert_allclose(factors, [1.0, 1.0, np.sqrt(2.0), 1.0])  # max(1, sqrt(t / f)) per image, max over p
    np.testing.assert_allclose(predicate_repeat_factors(dicts, 1.0), [np.sqrt(4 / 3), np.sqrt(4 / 3), 2.0, 1.0])
    with pytest.raises(ValueError, match="DATALOADER.REPEAT_THRESHOLD must be > 0"):
        predicate_repeat_factors(dicts, 0.0)
    with pytest.raises(ValueError, match="has no 'relations'"):
        predicate_repeat_factors([{"file_name": "a.jpg"}], 0.5)


def test_epochs_repeat_images_by_their_factor_on_average():
    factors = [1.0, 2.0, 1.5, 3.25]
    sampler = RepeatFactorTrainingSampler(repeat_factors=factors, batch_size=4, seed=0)
    epochs = [sampler._epoch(e) for e in range(2000)]
    counts = np.array([np.bincount(e, minlength=4) for e in epochs])
    assert (counts[:, 0] == 1).all() and (counts[:, 1] == 2).all()  # integer factors are exact
    assert set(counts[:, 2]) == {1, 2} and set(counts[:, 3]) == {3, 4}  # stochastic rounding of the fraction
    np.testing.assert_allclose(counts.mean(axis=0), factors, atol=0.05)


def test_ranks_split_each_global_batch_and_resume_is_identical():
    factors = np.linspace(1, 3, 50)
    streams = [list(itertools.islice(RepeatFactorTrainingSampler(repeat_factors=factors, batch_size=3, seed=5,
                                                                 rank=r, world_size=2), 400)) for r in range(2)]
    assert streams[0] != streams[1]
    single = list(itertools.islice(RepeatFactorTrainingSampler(repeat_factors=factors, batch_size=6, seed=5), 400))
    for b in range(400):  # the two ranks together walk the single-process stream
        assert streams[0][b] + streams[1][b] == single[b]
    resumed = list(itertools.islice(RepeatFactorTrainingSampler(repeat_factors=factors, batch_size=3, seed=5, rank=1,
                                                                world_size=2, start_batch=123), 100))
    assert resumed == streams[1][123:223]


def test_built_from_config():
    cfg = get_cfg()
    cfg.merge_from_list(["DATALOADER.REPEAT_THRESHOLD", "0.5"])
    sampler = SAMPLER_REGISTRY.get("RepeatFactorTrainingSampler")(cfg, dataset_dicts=dicts_with([[0], [0], [1]]),
                                                                   batch_size=2, seed=1)
    batch = next(iter(sampler))
    assert len(batch) == 2 and all(0 <= i < 3 for i in batch)
    assert sampler.state_dict()["name"] == "RepeatFactorTrainingSampler"
