"""Curriculum learning: train on the easiest samples first, then on more, then on all (seed 001's example: the first
20 epochs easy, then medium, then the full dataset).

Configured by ``DATALOADER.CURRICULUM.*`` (docs/tuning.md):

* a per-sample **difficulty** read from the dataset dicts (``num_relations``, ``num_objects``: more is harder;
  ``box_size``: smaller boxes relative to the image are harder; a video counts all its frames) or from a JSON file
  (``file``: e.g. per-sample losses of an earlier run, ``{"<dataset>/<id>": value}`` or ``{"<id>": value}``);
* **stages**: boundaries ``STAGES`` in epochs or iterations (``UNIT``); stage ``k`` < ``len(STAGES)`` draws from the
  easiest ``FRACTIONS[k]`` of the samples, the last stage from all of them.

Within a stage, samples come from an infinite stream of seeded permutations of that stage's pool, and optimizer step
``s`` of a stage starting at step ``s0`` takes positions ``[(s - s0) G, (s - s0 + 1) G)`` (``G`` = samples per step over
all ranks and accumulation micro-batches). So the stream is a pure function of (seed, config, step): ``--resume`` at
any iteration continues it exactly, without replaying batches. With ``DATASETS.MULTI_DATASET`` the same schedule runs
inside :class:`~sgg.data.samplers.multi_dataset.MultiDatasetDynamicSampler`: each source's pool is the easiest fraction
*of that source*, so the exact real / synthetic count of every batch is kept.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from sgg.config import configurable
from sgg.utils.errors import DataFormatError, MissingFileError

from ..dicts import dict_field_values
from . import SAMPLER_REGISTRY

__all__ = ["CurriculumSchedule", "CurriculumSampler", "sample_difficulties", "build_curriculum", "staged_steps",
           "DIFFICULTIES"]

logger = logging.getLogger(__name__)

_KEY = "DATALOADER.CURRICULUM"
DIFFICULTIES = ("num_relations", "num_objects", "box_size", "file")


def _units(d: dict) -> List[dict]:
    """The annotated units of a dataset dict: a video's frames, or the image itself."""
    frames = d.get("frames")
    return list(frames) if frames is not None else [d]


def _box_size_difficulty(d: dict) -> float:
    """Minus the mean relative box size sqrt(w h / (W H)) over the sample's boxes (smaller boxes = harder); a sample
    without boxes gets 0, the hardest value."""
    sizes = []
    for u in _units(d):
        boxes = np.asarray(u.get("boxes", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
        if not len(boxes):
            continue
        area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
        image = float(u.get("height", 1)) * float(u.get("width", 1))
        sizes.append(np.sqrt(area / max(image, 1e-9)))
    return -float(np.concatenate(sizes).mean()) if sizes else 0.0


def _sample_key(d: dict) -> str:
    sample_id = d.get("video_id", d.get("image_id", d.get("file_name")))
    return str(sample_id)


def _file_difficulties(dataset_dicts: Sequence[dict], path: str) -> np.ndarray:
    if not path:
        raise DataFormatError(f"{_KEY}.DIFFICULTY is 'file' but {_KEY}.DIFFICULTY_FILE is empty; give a JSON file "
                              "mapping sample ids ('<dataset>/<id>' or '<id>') to difficulties.")
    if not os.path.isfile(path):
        raise MissingFileError(f"{_KEY}.DIFFICULTY_FILE '{path}' does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{_KEY}.DIFFICULTY_FILE '{path}' is not readable JSON: {e}") from None
    if not isinstance(table, dict):
        raise DataFormatError(f"{_KEY}.DIFFICULTY_FILE '{path}' must hold a JSON object {{sample id: difficulty}}, "
                              f"got {type(table).__name__}.")
    out = np.empty(len(dataset_dicts), dtype=np.float64)
    names = dict_field_values(dataset_dicts, "dataset_name", "")
    for i, d in enumerate(dataset_dicts):
        key = _sample_key(d)
        value = table.get(f"{names[i]}/{key}", table.get(key))
        if value is None:
            raise DataFormatError(f"{_KEY}.DIFFICULTY_FILE '{path}' has no difficulty for sample '{names[i]}/{key}' "
                                  f"(dict {i}); it needs one for every training sample.")
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            raise DataFormatError(f"{_KEY}.DIFFICULTY_FILE '{path}': the difficulty of '{key}' must be a number, got "
                                  f"{value!r}.") from None
    return out


def sample_difficulties(dataset_dicts: Sequence[dict], difficulty: str, difficulty_file: str = "") -> np.ndarray:
    """Per-sample difficulty ``(N,)`` float64 (higher = harder) by the rule ``difficulty`` (see the module doc)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"{_KEY}.DIFFICULTY must be one of {', '.join(DIFFICULTIES)}, got '{difficulty}'.")
    if difficulty == "file":
        return _file_difficulties(dataset_dicts, difficulty_file)
    if difficulty == "box_size":
        return np.array([_box_size_difficulty(d) for d in dataset_dicts], dtype=np.float64)
    field = "relations" if difficulty == "num_relations" else "labels"
    values = []
    for i, d in enumerate(dataset_dicts):
        units = _units(d)
        if any(field not in u for u in units):
            raise DataFormatError(f"{_KEY}.DIFFICULTY '{difficulty}': dataset dict {i} ('{_sample_key(d)}') has no "
                                  f"'{field}'; it needs scene-graph dicts (or use DIFFICULTY file).")
        values.append(sum(len(u[field]) for u in units))
    return np.asarray(values, dtype=np.float64)


class CurriculumSchedule:
    """Stages over optimizer steps: before ``boundaries[k]`` (steps) the pool is the easiest ``fractions[k]`` of the
    samples (ties broken by index), from the last boundary on all samples.

    Args:
        difficulties: ``(N,)`` per-sample difficulty, higher = harder.
        boundaries: increasing optimizer steps at which the next stage starts.
        fractions: one per boundary, in (0, 1], non-decreasing.
    """

    def __init__(self, difficulties: Sequence[float], boundaries: Sequence[int], fractions: Sequence[float]):
        self.difficulties = np.asarray(difficulties, dtype=np.float64)
        self.boundaries, self.fractions = [int(b) for b in boundaries], [float(f) for f in fractions]
        if len(self.boundaries) != len(self.fractions):
            raise ValueError(f"{_KEY}.STAGES ({len(self.boundaries)} boundaries) and {_KEY}.FRACTIONS "
                             f"({len(self.fractions)}) must have the same length: one fraction per stage before the "
                             "last (which uses every sample).")
        if any(b <= 0 for b in self.boundaries) or any(b2 <= b1 for b1, b2 in zip(self.boundaries,
                                                                                  self.boundaries[1:])):
            raise ValueError(f"{_KEY}.STAGES must be positive and increasing (in {_KEY}.UNIT), got "
                             f"{list(boundaries)} -> steps {self.boundaries}.")
        if any(not 0 < f <= 1 for f in self.fractions) or any(f2 < f1 for f1, f2 in zip(self.fractions,
                                                                                        self.fractions[1:])):
            raise ValueError(f"{_KEY}.FRACTIONS must lie in (0, 1] and not decrease, got {self.fractions}.")
        if not np.isfinite(self.difficulties).all():
            raise ValueError(f"{_KEY}: every sample difficulty must be finite.")

    @property
    def num_stages(self) -> int:
        return len(self.boundaries) + 1

    def stage(self, step: int) -> int:
        """The stage of optimizer step ``step``."""
        return bisect.bisect_right(self.boundaries, int(step))

    def stage_start(self, k: int) -> int:
        """First optimizer step of stage ``k`` (0 for the first)."""
        return 0 if k == 0 else self.boundaries[k - 1]

    def stage_end(self, k: int) -> float:
        """First step after stage ``k`` (inf for the last)."""
        return self.boundaries[k] if k < len(self.boundaries) else math.inf

    def pool(self, k: int, subset: Optional[np.ndarray] = None) -> np.ndarray:
        """Indices of stage ``k``'s pool among ``subset`` (default all): its easiest ``fractions[k]``, at least one,
        in increasing difficulty."""
        idx = np.arange(len(self.difficulties)) if subset is None else np.asarray(subset, dtype=np.int64)
        order = idx[np.lexsort((idx, self.difficulties[idx]))]
        if k >= len(self.fractions):
            return order
        return order[:max(1, int(math.ceil(self.fractions[k] * len(order) - 1e-9)))]


def _pool_stream(pool: np.ndarray, seed: int, salt: int, start: int) -> Iterator[int]:
    """Infinite stream of seeded permutations of ``pool`` from position ``start``."""
    size = len(pool)
    epoch, offset = divmod(int(start), size)
    while True:
        g = torch.Generator()
        g.manual_seed(int(seed) * 1_000_003 + salt * 7_919 + epoch)
        yield from pool[torch.randperm(size, generator=g).numpy()][offset:].tolist()
        offset = 0
        epoch += 1


def staged_steps(schedule: CurriculumSchedule, indices: np.ndarray, seed: int, salt: int, start_step: int,
                 per_step: int) -> Iterator[List[int]]:
    """The samples of every optimizer step from ``start_step`` on (``per_step`` each), drawn from the stage's pool
    among ``indices``: stage ``k`` is its own stream (salt ``salt + 101 k``), entered at position
    ``(step - stage_start) x per_step``, so any start step gives the same lists as running from step 0."""
    step = int(start_step)
    while True:
        k = schedule.stage(step)
        pool = schedule.pool(k, indices)
        logger.info("Curriculum stage %d/%d from step %d: the easiest %d of %d samples.", k + 1, schedule.num_stages,
                    step, len(pool), len(indices))
        stream = _pool_stream(pool, seed, salt + 101 * k, (step - schedule.stage_start(k)) * per_step)
        end = schedule.stage_end(k)
        while step < end:
            yield [next(stream) for _ in range(per_step)]
            step += 1


def build_curriculum(cfg, dataset_dicts: Sequence[dict]) -> Optional[CurriculumSchedule]:
    """The schedule ``DATALOADER.CURRICULUM`` asks for over ``dataset_dicts`` (None when it is off). Epoch stages use
    ``SOLVER.ITERS_PER_EPOCH`` when set, else ceil(N / SOLVER.IMS_PER_BATCH) iterations per epoch."""
    c = cfg.DATALOADER.CURRICULUM
    if not c.ENABLED:
        return None
    if c.UNIT not in ("epoch", "iter"):
        raise ValueError(f"{_KEY}.UNIT must be 'epoch' or 'iter', got '{c.UNIT}'.")
    per_epoch = cfg.SOLVER.ITERS_PER_EPOCH or max(1, math.ceil(len(dataset_dicts) / cfg.SOLVER.IMS_PER_BATCH))
    scale = per_epoch if c.UNIT == "epoch" else 1
    boundaries = [int(round(float(s) * scale)) for s in c.STAGES]
    difficulties = sample_difficulties(dataset_dicts, c.DIFFICULTY, c.DIFFICULTY_FILE)
    schedule = CurriculumSchedule(difficulties, boundaries, c.FRACTIONS)
    logger.info("Curriculum by %s: stages start at iterations %s (%s %s), pools %s of %d samples.", c.DIFFICULTY,
                boundaries, list(c.STAGES), c.UNIT, [len(schedule.pool(k)) for k in range(schedule.num_stages)],
                len(dataset_dicts))
    return schedule


@SAMPLER_REGISTRY.register()
class CurriculumSampler(Sampler[List[int]]):
    """Infinite per-rank batch sampler following a :class:`CurriculumSchedule` (``DATALOADER.CURRICULUM``).

    Optimizer step ``s`` draws ``G = batch_size x world_size x accumulation`` samples from its stage's pool (see
    :func:`staged_steps`); micro-batch ``m`` of rank ``r`` takes the chunk ``m W + r`` of ``batch_size`` of them.
    ``build_train_loader`` uses it in place of ``TrainingSampler`` when the curriculum is enabled.
    """

    @configurable
    def __init__(self, *, schedule: CurriculumSchedule, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, accumulation: int = 1, start_batch: int = 0):
        if batch_size <= 0:
            raise ValueError(f"CurriculumSampler batch_size must be positive, got {batch_size}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}.")
        self.schedule = schedule
        self._batch_size, self._seed, self._rank, self._world_size = int(batch_size), int(seed), int(rank), \
            int(world_size)
        self._accumulation, self._start_batch = max(1, int(accumulation)), int(start_batch)

    @classmethod
    def from_config(cls, cfg, dataset_dicts, *, batch_size, seed, rank=0, world_size=1, start_batch=0):
        schedule = build_curriculum(cfg, dataset_dicts)
        if schedule is None:
            raise ValueError(f"DATALOADER.SAMPLER_TRAIN is CurriculumSampler but {_KEY}.ENABLED is False; enable it "
                             "(and set its keys) or use TrainingSampler.")
        return {"schedule": schedule, "batch_size": batch_size, "seed": seed, "rank": rank, "world_size": world_size,
                "accumulation": cfg.SOLVER.ACCUMULATE_GRAD_STEPS, "start_batch": start_batch}

    def __iter__(self) -> Iterator[List[int]]:
        step, micro = divmod(self._start_batch, self._accumulation)
        per_step = self._batch_size * self._world_size * self._accumulation
        indices = np.arange(len(self.schedule.difficulties))
        for samples in staged_steps(self.schedule, indices, self._seed, 0, step, per_step):
            for m in range(micro, self._accumulation):
                lo = (m * self._world_size + self._rank) * self._batch_size
                yield samples[lo: lo + self._batch_size]
            micro = 0

    def state_dict(self) -> dict:
        """Identity of the stream (resume checks it)."""
        return {"name": type(self).__name__, "seed": self._seed, "size": len(self.schedule.difficulties),
                "batch_size": self._batch_size, "world_size": self._world_size,
                "boundaries": self.schedule.boundaries, "fractions": self.schedule.fractions}
