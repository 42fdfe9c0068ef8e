"""MultiDatasetDynamicSampler: exact per-batch composition over 1 000 batches, rank streams, resume, errors."""

import itertools

import numpy as np
import pytest

from sgg.config import get_cfg
from sgg.data import build_train_loader
from sgg.data.samplers import SAMPLER_REGISTRY, MultiDatasetDynamicSampler
from sgg.data.samplers.multi_dataset import real_count, slot_real_counts

N_REAL, N_SYN = 230, 170
TYPES = ["real"] * N_REAL + ["synthetic"] * N_SYN
IS_REAL = np.array([t == "real" for t in TYPES])


def make(global_batch, ratio, world, accumulation=1, rank=0, seed=7, start_batch=0, types=TYPES):
    per_rank = global_batch // (world * accumulation)
    assert per_rank * world * accumulation == global_batch
    return MultiDatasetDynamicSampler(dataset_types=types, batch_size=per_rank, real_ratio=ratio,
                                      synthetic_ratio=round(1 - ratio, 10), seed=seed, rank=rank, world_size=world,
                                      accumulation=accumulation, start_batch=start_batch)


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


# (global batch = SOLVER.IMS_PER_BATCH, real ratio, world size, accumulation steps, real count per global batch)
CASES = [(20, 0.7, 1, 1, 14), (20, 0.7, 4, 1, 14), (12, 0.5, 2, 1, 6), (10, 0.3, 2, 1, 3), (16, 0.75, 4, 1, 12),
         (24, 0.7, 2, 2, 17), (9, 0.5, 3, 1, 5)]


@pytest.mark.parametrize("global_batch,ratio,world,accumulation,expected_real", CASES)
def test_composition_is_exact_for_every_global_batch(global_batch, ratio, world, accumulation, expected_real):
    steps = 1000
    slots = world * accumulation
    per_rank = global_batch // slots
    streams = [take(make(global_batch, ratio, world, accumulation, rank=r), steps * accumulation)
               for r in range(world)]
    real_per_slot = np.zeros((steps, slots), dtype=np.int64)
    for step in range(steps):
        union = []
        for rank in range(world):
            for micro in range(accumulation):
                batch = streams[rank][step * accumulation + micro]
                assert len(batch) == per_rank
                n_real = int(IS_REAL[batch].sum())
                assert list(IS_REAL[batch]) == [True] * n_real + [False] * (per_rank - n_real)  # real first
                real_per_slot[step, micro * world + rank] = n_real
                union += batch
        assert int(IS_REAL[union].sum()) == expected_real  # exact for the global batch
        n_syn = global_batch - expected_real
        within_epoch = (step * expected_real) // N_REAL == ((step + 1) * expected_real - 1) // N_REAL and \
            (step * n_syn) // N_SYN == ((step + 1) * n_syn - 1) // N_SYN
        if within_epoch:  # ranks never draw the same sample within a step (except across an epoch boundary)
            assert len(set(union)) == global_batch
    # per-slot counts differ by at most one, and the extra samples rotate: over `slots` steps all slots are equal
    assert (real_per_slot.max(axis=1) - real_per_slot.min(axis=1)).max() <= 1
    window = real_per_slot[: (steps // slots) * slots].reshape(-1, slots, slots).sum(axis=1)
    assert (window == window[:, :1]).all()
    if (per_rank * ratio).is_integer():  # every rank's batch is exact too
        assert (real_per_slot == round(per_rank * ratio)).all()
    if world > 1:  # every rank's stream differs
        flat = [tuple(itertools.chain.from_iterable(s)) for s in streams]
        assert len(set(flat)) == world


def test_ddp_example_from_the_design():
    # B = 20 on 4 ranks, r = 0.7: 14 real per global batch as 4/4/3/3, rotating between iterations.
    counts = [slot_real_counts(14, 4, step) for step in range(4)]
    assert counts == [[4, 4, 3, 3], [3, 3, 4, 4], [4, 4, 3, 3], [3, 3, 4, 4]]
    assert real_count(20, 0.7) == 14 and real_count(5, 0.5) == 3 and real_count(10, 0.25) == 3


def test_each_source_is_walked_epoch_by_epoch():
    sampler = make(20, 0.5, 1)  # 10 real per batch -> 23 batches per real epoch of 230
    batches = take(sampler, 46)
    real = [i for b in batches for i in b if IS_REAL[i]]
    assert sorted(real[:230]) == list(range(230)) and sorted(real[230:]) == list(range(230))
    assert real[:230] != real[230:]  # a new permutation each epoch


@pytest.mark.parametrize("world,accumulation,start", [(1, 1, 0), (1, 1, 37), (4, 1, 501), (2, 2, 77), (2, 2, 78)])
def test_resume_continues_the_identical_stream(world, accumulation, start):
    for rank in range(world):
        full = take(make(24, 0.7, world, accumulation, rank=rank), start + 60)
        resumed = take(make(24, 0.7, world, accumulation, rank=rank, start_batch=start), 60)
        assert resumed == full[start:]


def test_seeded_and_deterministic():
    assert take(make(20, 0.7, 2, rank=1, seed=3), 50) == take(make(20, 0.7, 2, rank=1, seed=3), 50)
    assert take(make(20, 0.7, 2, rank=1, seed=3), 50) != take(make(20, 0.7, 2, rank=1, seed=4), 50)
    assert make(20, 0.7, 2).state_dict()["name"] == "MultiDatasetDynamicSampler"


def test_invalid_settings_fail_clearly():
    with pytest.raises(ValueError, match=r"REAL_SAMPLING_RATIO \(0.7\) \+ SYNTHETIC_SAMPLING_RATIO \(0.4\).*sum to 1"):
        MultiDatasetDynamicSampler(dataset_types=TYPES, batch_size=10, real_ratio=0.7, synthetic_ratio=0.4, seed=0)
    with pytest.raises(ValueError, match="SYNTHETIC_SAMPLING_RATIO=0.1 gives 0 synthetic samples in a global batch of 4"
                       ):
        MultiDatasetDynamicSampler(dataset_types=TYPES, batch_size=2, real_ratio=0.9, synthetic_ratio=0.1, seed=0,
                                   world_size=2)
    with pytest.raises(ValueError, match="SYNTHETIC_DATASETS gave no samples but 3 per global batch"):
        make(10, 0.7, 1, types=["real"] * 50)
    with pytest.raises(ValueError, match="REAL_SAMPLING_RATIO must be in \\[0, 1\\]"):
        MultiDatasetDynamicSampler(dataset_types=TYPES, batch_size=10, real_ratio=1.5, synthetic_ratio=-0.5, seed=0)
    with pytest.raises(ValueError, match="dataset_type \\['video'\\]; expected 'real' or 'synthetic'"):
        make(10, 0.7, 1, types=TYPES + ["video"])
    only_real = make(10, 1.0, 1, types=["real"] * 30)  # a zero ratio needs no source
    assert all(len(b) == 10 for b in take(only_real, 5))


def test_from_config_needs_tagged_dicts():
    cfg = get_cfg()
    with pytest.raises(ValueError, match="needs 'dataset_type' in every dataset dict; dict 0 \\('x'\\)"):
        SAMPLER_REGISTRY.get("MultiDatasetDynamicSampler")(cfg, dataset_dicts=[{"dataset_name": "x"}], batch_size=2,
                                                           seed=0)


def _multi_cfg(tmp_root, **overrides):
    cfg = get_cfg()
    opts = {"DATASETS.MULTI_DATASET.ENABLED": True, "DATASETS.MULTI_DATASET.REAL_DATASETS": ("demo_vg_train",),
            "DATASETS.MULTI_DATASET.SYNTHETIC_DATASETS": ("demo_synthetic_train",), "SOLVER.IMS_PER_BATCH": 10,
            "DATALOADER.NUM_WORKERS": 0, "INPUT.MIN_SIZE_TRAIN": (64,), "INPUT.MAX_SIZE_TRAIN": 96,
            "DATASETS.MULTI_DATASET.SYNTHETIC_LOSS_WEIGHT": 0.25}
    opts.update(overrides)
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    return cfg


def test_train_loader_uses_the_sampler_and_tags_samples(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "shared_sgg_datasets"  # the demo is generated once per session
    monkeypatch.setenv("SGG_DATASETS", str(root))
    loader = build_train_loader(_multi_cfg(root), seed=1)
    assert isinstance(loader.sampler, MultiDatasetDynamicSampler)
    for batch in itertools.islice(iter(loader), 2):
        types = [x["dataset_type"] for x in batch]
        assert types == ["real"] * 7 + ["synthetic"] * 3
        assert [x["loss_weight"] for x in batch] == [1.0] * 7 + [0.25] * 3
        assert all(x["file_name"].startswith(str(root)) for x in batch)
        assert {x["dataset_name"] for x in batch} == {"demo_vg_train", "demo_synthetic_train"}


def test_train_loader_validates_the_multi_dataset_config(tmp_path, monkeypatch):
    monkeypatch.setenv("SGG_DATASETS", str(tmp_path))
    with pytest.raises(ValueError, match="REAL_DATASETS names 'demo_vg_trian'.*Did you mean 'demo_vg_train'"):
        build_train_loader(_multi_cfg(tmp_path, **{"DATASETS.MULTI_DATASET.REAL_DATASETS": ("demo_vg_trian",)}),
                           seed=0)
    with pytest.raises(ValueError, match="SAMPLER_TRAIN='RepeatFactorTrainingSampler' cannot be combined"):
        build_train_loader(_multi_cfg(tmp_path, **{"DATALOADER.SAMPLER_TRAIN": "RepeatFactorTrainingSampler"}), seed=0)
    with pytest.raises(ValueError, match="sum to 1"):
        build_train_loader(_multi_cfg(tmp_path, **{"DATASETS.MULTI_DATASET.SYNTHETIC_SAMPLING_RATIO": 0.2}), seed=0)
    with pytest.raises(ValueError, match="REAL_SAMPLING_RATIO=0.04 gives 0 real samples in a global batch of 10"):
        build_train_loader(_multi_cfg(tmp_path, **{"DATASETS.MULTI_DATASET.REAL_SAMPLING_RATIO": 0.04,
                                                   "DATASETS.MULTI_DATASET.SYNTHETIC_SAMPLING_RATIO": 0.96}), seed=0)
    assert not (tmp_path / "demo").exists()  # validation happens before any data is generated or read
