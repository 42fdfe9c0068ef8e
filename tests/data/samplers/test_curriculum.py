"""Curriculum learning (DATALOADER.CURRICULUM): stage order on a hand-made dataset, epoch / iteration units, ranks and
accumulation, exact resume, composition with the multi-dataset sampler's exact ratios, difficulty rules and errors."""

import itertools
import json
import shutil

import numpy as np
import pytest
import torch

from sgg.config import get_cfg
from sgg.data.build import TrainLoader, curriculum_sampler_name
from sgg.data.samplers import CurriculumSampler, MultiDatasetDynamicSampler
from sgg.data.samplers.curriculum import CurriculumSchedule, build_curriculum, sample_difficulties
from sgg.utils.errors import DataFormatError
from tests.engine.helpers import TOY_CFG, load_model_state, run_cli

N = 30
# Hand-made scene graphs: sample i has DIFFICULTY[i] relations (a shuffled 0..29), so the easiest third is known.
DIFFICULTY = np.random.RandomState(3).permutation(N)
DICTS = [{"image_id": i, "height": 100, "width": 100, "labels": np.zeros(2, dtype=np.int64),
          "boxes": np.array([[0, 0, 10 + i, 10 + i], [0, 0, 5, 5]], dtype=np.float32),
          "relations": np.zeros((int(DIFFICULTY[i]), 3), dtype=np.int64)} for i in range(N)]
EASY = set(np.flatnonzero(DIFFICULTY < 10).tolist())  # FRACTIONS 1/3 -> the 10 samples with 0..9 relations
MEDIUM = set(np.flatnonzero(DIFFICULTY < 20).tolist())


def curriculum_cfg(stages=(2, 4), fractions=(1 / 3, 2 / 3), unit="epoch", batch=5, accumulation=1):
    cfg = get_cfg()
    cfg.DATALOADER.CURRICULUM.ENABLED = True
    cfg.DATALOADER.CURRICULUM.STAGES = stages
    cfg.DATALOADER.CURRICULUM.FRACTIONS = fractions
    cfg.DATALOADER.CURRICULUM.UNIT = unit
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.SOLVER.ACCUMULATE_GRAD_STEPS = accumulation
    return cfg


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_stages_follow_the_seed_example_easy_then_medium_then_all():
    """2 epochs easy, until epoch 4 medium, then everything (epochs of N / batch = 6 iterations)."""
    cfg = curriculum_cfg()
    sampler = CurriculumSampler(cfg, dataset_dicts=DICTS, batch_size=5, seed=11)
    assert sampler.schedule.boundaries == [12, 24]
    batches = take(sampler, 60)
    seen = [set(itertools.chain.from_iterable(batches[a:b])) for a, b in ((0, 12), (12, 24), (24, 60))]
    assert seen[0] == EASY  # 60 draws from the 10 easiest: each of them, nothing else
    assert seen[1] == MEDIUM
    assert seen[2] == set(range(N))
    # within a stage the pool is walked by whole permutations: 60 draws = every easy sample 6 times
    counts = np.bincount(list(itertools.chain.from_iterable(batches[:12])), minlength=N)
    assert sorted(counts[list(EASY)]) == [6] * 10
    # iteration units: the same boundaries given directly
    by_iter = CurriculumSampler(curriculum_cfg(stages=(12, 24), unit="iter"), dataset_dicts=DICTS, batch_size=5,
                                seed=11)
    assert take(by_iter, 60) == batches
    # ITERS_PER_EPOCH (tools/train.py -epochs) sets the epoch length when given
    cfg.SOLVER.ITERS_PER_EPOCH = 4
    assert build_curriculum(cfg, DICTS).boundaries == [8, 16]


@pytest.mark.parametrize("world,accumulation", [(1, 1), (2, 1), (1, 2), (2, 3)])
def test_ranks_and_accumulation_share_one_step_and_resume_exactly(world, accumulation):
    per_rank = 2
    cfg = curriculum_cfg(stages=(3, 7), unit="iter", batch=per_rank * world * accumulation, accumulation=accumulation)
    make = lambda rank, start=0: CurriculumSampler(cfg, dataset_dicts=DICTS, batch_size=per_rank, seed=5, rank=rank,  # noqa: E731
                                                   world_size=world, start_batch=start)
    n_batches = 12 * accumulation
    streams = [take(make(r), n_batches) for r in range(world)]
    for step in range(12):
        union = [i for r in range(world) for m in range(accumulation) for i in streams[r][step * accumulation + m]]
        pool = EASY if step < 3 else MEDIUM if step < 7 else set(range(N))
        assert set(union) <= pool, step  # every micro-batch of every rank of step s is in stage(s)'s pool
    for start in (1, 3 * accumulation, 5 * accumulation + (accumulation - 1), 9 * accumulation):
        for r in range(world):  # --resume at batch `start` continues the same stream
            assert take(make(r, start), n_batches - start) == streams[r][start:]


def test_composes_with_the_multi_dataset_sampler_exact_ratio():
    types = ["real"] * 18 + ["synthetic"] * 12
    dicts = [dict(d, dataset_type=t) for d, t in zip(DICTS, types)]
    cfg = curriculum_cfg(stages=(4, 8), fractions=(0.5, 0.75), unit="iter", batch=10)
    cfg.DATASETS.MULTI_DATASET.ENABLED = True
    cfg.DATASETS.MULTI_DATASET.REAL_SAMPLING_RATIO, cfg.DATASETS.MULTI_DATASET.SYNTHETIC_SAMPLING_RATIO = 0.7, 0.3
    make = lambda start=0: MultiDatasetDynamicSampler(cfg, dataset_dicts=dicts, batch_size=10, seed=2,  # noqa: E731
                                                      start_batch=start)
    batches = take(make(), 20)
    real, syn = np.arange(18), np.arange(18, 30)
    for step, batch in enumerate(batches):
        assert [types[i] for i in batch] == ["real"] * 7 + ["synthetic"] * 3  # exact composition, real first
        frac = 0.5 if step < 4 else 0.75 if step < 8 else 1.0
        for source in (real, syn):  # each source's pool = its own easiest fraction
            pool = source[np.argsort(DIFFICULTY[source], kind="stable")][:int(np.ceil(frac * len(source)))]
            assert set(batch) & set(source.tolist()) <= set(pool.tolist()), step
    assert set(itertools.chain.from_iterable(batches[8:])) != set(itertools.chain.from_iterable(batches[:4]))
    assert take(make(6), 14) == batches[6:]
    assert make().state_dict()["curriculum"] == {"boundaries": [4, 8], "fractions": [0.5, 0.75]}
    cfg.DATALOADER.CURRICULUM.ENABLED = False  # off: the multi-dataset stream is the one it always was
    plain = MultiDatasetDynamicSampler(dataset_types=types, batch_size=10, real_ratio=0.7, synthetic_ratio=0.3, seed=2)
    assert take(make(), 20) == take(plain, 20) and "curriculum" not in plain.state_dict()


def test_train_loader_picks_the_curriculum_and_refuses_other_samplers():
    cfg = curriculum_cfg(stages=(1,), fractions=(0.2,), unit="iter")
    cfg.DATALOADER.NUM_WORKERS = 0
    loader = TrainLoader(cfg, DICTS, lambda d: d["image_id"], batch_size=5, seed=0,
                         sampler_name=curriculum_sampler_name(cfg))
    first = next(iter(loader))
    assert set(first) <= set(np.flatnonzero(DIFFICULTY < 6).tolist())
    assert loader.state_dict()["sampler"]["name"] == "CurriculumSampler"
    cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
    with pytest.raises(ValueError, match="cannot be combined with DATALOADER.SAMPLER_TRAIN='RepeatFactor"):
        curriculum_sampler_name(cfg)
    cfg.DATALOADER.CURRICULUM.ENABLED = False
    assert curriculum_sampler_name(cfg) == ""


def test_difficulty_rules_and_file(tmp_path):
    assert sample_difficulties(DICTS, "num_relations").tolist() == DIFFICULTY.tolist()
    assert sample_difficulties(DICTS, "num_objects").tolist() == [2.0] * N
    box = sample_difficulties(DICTS, "box_size")
    assert (np.diff(box) < 0).all()  # sample i has a larger first box than i - 1: easier
    video = {"video_id": "v", "frames": [DICTS[3], DICTS[4]]}  # a video counts all its frames
    assert sample_difficulties([video], "num_relations")[0] == DIFFICULTY[3] + DIFFICULTY[4]
    path = tmp_path / "losses.json"
    path.write_text(json.dumps({**{str(i): float(N - i) for i in range(N - 1)}, f"vg_train/{N - 1}": 0.5}))
    named = [dict(d, dataset_name="vg_train") for d in DICTS]
    assert sample_difficulties(named, "file", str(path)).tolist() == [float(N - i) for i in range(N - 1)] + [0.5]
    path.write_text(json.dumps({"0": 1.0}))
    with pytest.raises(DataFormatError, match="has no difficulty for sample 'vg_train/1'"):
        sample_difficulties(named, "file", str(path))
    with pytest.raises(DataFormatError, match="DIFFICULTY_FILE is empty"):
        sample_difficulties(DICTS, "file", "")
    with pytest.raises(ValueError, match="DIFFICULTY must be one of"):
        sample_difficulties(DICTS, "loss")
    with pytest.raises(DataFormatError, match="has no 'relations'"):
        sample_difficulties([{"image_id": 0}], "num_relations")


@pytest.mark.parametrize("stages, fractions, message", [
    ((10, 5), (0.3, 0.6), "positive and increasing"),
    ((5,), (0.3, 0.6), "same length"),
    ((5, 10), (0.6, 0.3), "not decrease"),
    ((5,), (0.0,), "lie in (0, 1]"),
])
def test_schedule_errors_name_the_keys(stages, fractions, message):
    with pytest.raises(ValueError, match=r"DATALOADER\.CURRICULUM") as e:
        CurriculumSchedule(DIFFICULTY, stages, fractions)
    assert message in str(e.value)


def test_training_with_a_curriculum_resumes_bit_identically(tmp_path):
    """Through the trainer: a curriculum by a difficulty file (the toy dicts have no scene graphs), 12 iterations
    straight == 6 + --resume 6, resuming inside the second stage (iterations 4-7)."""
    table = tmp_path / "difficulty.json"
    table.write_text(json.dumps({f"toy_train/{i}": float((i * 37) % 64) for i in range(64)}))
    opts = ["DATALOADER.CURRICULUM.ENABLED", "True", "DATALOADER.CURRICULUM.DIFFICULTY", "file",
            "DATALOADER.CURRICULUM.DIFFICULTY_FILE", str(table), "DATALOADER.CURRICULUM.UNIT", "iter",
            "DATALOADER.CURRICULUM.STAGES", "(4, 8)", "DATALOADER.CURRICULUM.FRACTIONS", "(0.25, 0.5)",
            "TEST.EVAL_PERIOD", "0", "SOLVER.MAX_ITER", "12", "SOLVER.CHECKPOINT_PERIOD", "6", "SOLVER.STEPS", "(9,)"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(straight), *opts).returncode == 0
    resumed.mkdir()
    shutil.copy(straight / "model_0000005.pth", resumed / "model_0000005.pth")
    (resumed / "last_checkpoint").write_text("model_0000005.pth")
    r = run_cli("--config-file", TOY_CFG, "--resume", "OUTPUT_DIR", str(resumed), *opts)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_model_state(straight / "model_final.pth"), load_model_state(resumed / "model_final.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = (straight / "log.txt").read_text()
    assert "Curriculum stage 1/3 from step 0: the easiest 16 of 64 samples" in log
    assert "Curriculum stage 3/3 from step 8: the easiest 64 of 64 samples" in log
    assert "Curriculum stage 2/3 from step 6" in (resumed / "log.txt").read_text()  # entered mid-stage on resume
