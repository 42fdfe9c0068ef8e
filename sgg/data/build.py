"""Dataset dicts, mappers and the train / test data loaders.

A batch is a ``list[dict]`` (one dict per image / video / clip) as produced by the dataset's mapper.
Training loaders are infinite and exactly resumable: the batch sampler restarts at ``start_batch``, and every sample
is mapped under RNG seeds derived from (loader seed, rank, batch number, position), so random augmentations do not
depend on the number of workers or on where a run was interrupted.
"""

from __future__ import annotations

import copy
import difflib
import logging
import random
from typing import Callable, List, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sgg.utils import comm
from sgg.utils.registry import Registry

from .catalog import DatasetCatalog, MetadataCatalog
from .dicts import concat_dataset_dicts, set_dict_fields
from .samplers import SAMPLER_REGISTRY, InferenceSampler
from .samplers.multi_dataset import validate_multi_dataset_ratios

__all__ = [
    "MAPPER_REGISTRY", "get_dataset_dicts", "get_multi_dataset_dicts", "build_mapper", "build_train_loader",
    "build_test_loader", "trivial_batch_collator", "MapDataset", "TrainLoader",
    "multi_dataset_sampler_name", "curriculum_sampler_name",
]

logger = logging.getLogger(__name__)

MAPPER_REGISTRY = Registry("MAPPER")
MAPPER_REGISTRY.__doc__ = """Per-sample mappers (file dict -> model input dict), built as ``cls(cfg, is_train)``.
Chosen by ``DATALOADER.MAPPER`` or the dataset metadata's ``mapper``; the identity mapper is the fallback."""


@MAPPER_REGISTRY.register()
class IdentityMapper:
    """Returns a deep copy of the dataset dict (for datasets whose dicts are already model inputs)."""

    def __init__(self, cfg=None, is_train: bool = True):
        self.is_train = is_train

    def __call__(self, dataset_dict: dict) -> dict:
        return copy.deepcopy(dataset_dict)


def get_dataset_dicts(names: Sequence[str]) -> Sequence[dict]:
    """Concatenate the dataset dicts of ``names`` (each dict gets ``dataset_name``).

    Lists of dicts give a list; datasets whose loader returns a lazy sequence (VG's
    :class:`~sgg.data.datasets.visual_genome.VGDatasetDicts`) stay lazy: a sequence indexable like the list.
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("No dataset given (DATASETS.TRAIN / DATASETS.TEST is empty).")
    parts: List[Sequence[dict]] = []
    for name in names:
        dicts = DatasetCatalog.get(name)
        if not len(dicts):
            raise ValueError(f"Dataset '{name}' is empty.")
        set_dict_fields(dicts, {"dataset_name": name}, overwrite=False)
        parts.append(dicts)
    return concat_dataset_dicts(parts)


def multi_dataset_enabled(cfg) -> bool:
    """True when seed 002's real + synthetic mixing is on (``MULTI_DATASET.ENABLED`` or ``TYPE: MULTI_DATASET``)."""
    return bool(cfg.DATASETS.MULTI_DATASET.ENABLED) or cfg.DATASETS.TYPE == "MULTI_DATASET"


def get_multi_dataset_dicts(cfg) -> Sequence[dict]:
    """Real + synthetic dataset dicts, each tagged with ``dataset_type`` and ``loss_weight`` (real ones first)."""
    m = cfg.DATASETS.MULTI_DATASET
    parts: List[Sequence[dict]] = []
    for dtype, names, weight in (("real", m.REAL_DATASETS, m.REAL_LOSS_WEIGHT),
                                 ("synthetic", m.SYNTHETIC_DATASETS, m.SYNTHETIC_LOSS_WEIGHT)):
        if not names:
            raise ValueError(f"DATASETS.MULTI_DATASET.{dtype.upper()}_DATASETS is empty; name at least one dataset.")
        for name in names:
            if name not in DatasetCatalog:
                close = difflib.get_close_matches(name, DatasetCatalog.list(), n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"DATASETS.MULTI_DATASET.{dtype.upper()}_DATASETS names '{name}', which is not a "
                                 f"registered dataset.{hint} Registered: {', '.join(DatasetCatalog.list())}.")
        dicts = get_dataset_dicts(list(names))
        set_dict_fields(dicts, {"dataset_type": dtype, "loss_weight": float(weight)})
        parts.append(dicts)
    return concat_dataset_dicts(parts)


def build_mapper(cfg, dataset_name: str, is_train: bool) -> Callable[[dict], dict]:
    """``DATALOADER.MAPPER`` if set, else the metadata's ``mapper``, else the identity mapper."""
    name = cfg.DATALOADER.MAPPER or MetadataCatalog.get(dataset_name).get("mapper") or "IdentityMapper"
    return MAPPER_REGISTRY.get(name)(cfg, is_train)


def trivial_batch_collator(batch: List[dict]) -> List[dict]:
    """Batches stay lists of dicts (images of different sizes)."""
    return batch


class MapDataset(Dataset):
    """``dataset[i]`` = ``mapper(dicts[i])``; ``dataset[(i, seed)]`` first seeds python/numpy/torch RNGs with
    ``seed``."""

    def __init__(self, dicts: List[dict], mapper: Callable[[dict], dict]):
        self._dicts = dicts
        self._mapper = mapper

    def __len__(self) -> int:
        return len(self._dicts)

    def __getitem__(self, item):
        if isinstance(item, tuple):
            idx, seed = item
            random.seed(seed)
            np.random.seed(seed % 2**32)
            # Only the CPU generator: torch.manual_seed also seeds (lazily queues) every accelerator backend, which
            # costs ~0.3 ms per sample; the mappers draw from the CPU generator only.
            torch.default_generator.manual_seed(seed)
        else:
            idx = item
        return self._mapper(self._dicts[idx])


class _SeededBatches(Sampler):
    """Attaches a deterministic per-sample seed to every index of an infinite batch sampler."""

    def __init__(self, batch_sampler, seed: int, rank: int, start_batch: int):
        self._inner, self._seed, self._rank, self._start = batch_sampler, seed, rank, start_batch

    def __iter__(self):
        for b, batch in enumerate(self._inner, start=self._start):
            base = (self._seed * 7919 + self._rank * 104729 + b * 1_000_003) % (2**62)
            yield [(int(i), (base + j) % (2**62)) for j, i in enumerate(batch)]


class TrainLoader:
    """Iterable of training batches with a ``state_dict`` so that a resumed run continues the same stream."""

    def __init__(self, cfg, dicts: List[dict], mapper, *, batch_size: int, seed: int, start_batch: int = 0,
                 sampler_name: str = ""):
        self.cfg, self.dicts, self.mapper = cfg, dicts, mapper
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        self.sampler = SAMPLER_REGISTRY.get(sampler_name or cfg.DATALOADER.SAMPLER_TRAIN)(
            cfg, dataset_dicts=dicts, batch_size=batch_size, rank=self.rank, world_size=self.world_size,
            seed=seed, start_batch=start_batch,
        )
        self.start_batch = start_batch
        self._loader = DataLoader(
            MapDataset(dicts, mapper),
            batch_sampler=_SeededBatches(self.sampler, seed, self.rank, start_batch),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            collate_fn=trivial_batch_collator,
            persistent_workers=False,
        )

    def __iter__(self):
        return iter(self._loader)

    def state_dict(self) -> dict:
        """What the sampler is; the position is the trainer's count of consumed batches."""
        state = {"seed": self.seed, "batch_size": self.batch_size, "world_size": self.world_size}
        if hasattr(self.sampler, "state_dict"):
            state["sampler"] = self.sampler.state_dict()
        return state


def per_rank_batch_size(cfg) -> int:
    """``SOLVER.IMS_PER_BATCH`` (global) / (world size × accumulation steps), with a clear error if it does not
    divide."""
    world = comm.get_world_size()
    accum = max(1, cfg.SOLVER.ACCUMULATE_GRAD_STEPS)
    total = cfg.SOLVER.IMS_PER_BATCH
    if total % (world * accum) != 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH={total} must be divisible by world size ({world}) x "
            f"SOLVER.ACCUMULATE_GRAD_STEPS ({accum})."
        )
    return total // (world * accum)


MULTI_DATASET_SAMPLER = "MultiDatasetDynamicSampler"


def multi_dataset_sampler_name(cfg) -> str:
    """Validate the multi-dataset settings (ratios vs ``SOLVER.IMS_PER_BATCH``, sampler) and return the sampler name.

    ``DATALOADER.SAMPLER_TRAIN`` may stay at its default ``TrainingSampler`` (replaced automatically) or name
    ``MultiDatasetDynamicSampler``; any other sampler cannot keep the exact per-batch ratio and is refused.
    """
    m = cfg.DATASETS.MULTI_DATASET
    validate_multi_dataset_ratios(m.REAL_SAMPLING_RATIO, m.SYNTHETIC_SAMPLING_RATIO, cfg.SOLVER.IMS_PER_BATCH)
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name not in ("TrainingSampler", MULTI_DATASET_SAMPLER):
        raise ValueError(
            f"DATALOADER.SAMPLER_TRAIN='{name}' cannot be combined with DATASETS.MULTI_DATASET (it would not keep "
            f"the real/synthetic ratio per batch); set it to '{MULTI_DATASET_SAMPLER}' or disable the multi-dataset "
            "mode."
        )
    return MULTI_DATASET_SAMPLER


CURRICULUM_SAMPLER = "CurriculumSampler"


def curriculum_sampler_name(cfg) -> str:
    """``CurriculumSampler`` when ``DATALOADER.CURRICULUM.ENABLED`` (``SAMPLER_TRAIN`` may stay ``TrainingSampler``
    or name it; another sampler would ignore the curriculum and is refused), else "" (``SAMPLER_TRAIN``). With the
    multi-dataset mode the curriculum runs inside its sampler instead."""
    if not cfg.DATALOADER.CURRICULUM.ENABLED:
        return ""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name not in ("TrainingSampler", CURRICULUM_SAMPLER):
        raise ValueError(f"DATALOADER.CURRICULUM.ENABLED cannot be combined with DATALOADER.SAMPLER_TRAIN='{name}' "
                         f"(it would not follow the curriculum); set SAMPLER_TRAIN to TrainingSampler or "
                         f"{CURRICULUM_SAMPLER}, or disable the curriculum.")
    return CURRICULUM_SAMPLER


def build_train_loader(cfg, *, seed: int, start_batch: int = 0, mapper=None) -> TrainLoader:
    """The training loader for ``DATASETS.TRAIN`` (or the multi-dataset mix), starting at batch ``start_batch``.

    The config's dataset options must be in effect (``sgg.engine.setup`` / ``DatasetCatalog.configure(cfg)``)."""
    sampler_name = ""
    if multi_dataset_enabled(cfg):
        m = cfg.DATASETS.MULTI_DATASET
        DatasetCatalog.check_configured(cfg, list(m.REAL_DATASETS) + list(m.SYNTHETIC_DATASETS))
        sampler_name = multi_dataset_sampler_name(cfg)
        dicts = get_multi_dataset_dicts(cfg)
        first = cfg.DATASETS.MULTI_DATASET.REAL_DATASETS[0]
    else:
        DatasetCatalog.check_configured(cfg, cfg.DATASETS.TRAIN)
        dicts = get_dataset_dicts(cfg.DATASETS.TRAIN)
        first = cfg.DATASETS.TRAIN[0]
        sampler_name = curriculum_sampler_name(cfg)
    if mapper is None:
        mapper = build_mapper(cfg, first, is_train=True)
    return TrainLoader(cfg, dicts, mapper, batch_size=per_rank_batch_size(cfg), seed=seed, start_batch=start_batch,
                       sampler_name=sampler_name)


def build_test_loader(cfg, dataset_name: str, mapper=None, batch_size: int = 1) -> DataLoader:
    """A finite loader over this rank's shard of ``dataset_name`` (no shuffling, no augmentation); the config's
    dataset options must be in effect, as for :func:`build_train_loader`."""
    DatasetCatalog.check_configured(cfg, [dataset_name])
    dicts = get_dataset_dicts([dataset_name])
    if mapper is None:
        mapper = build_mapper(cfg, dataset_name, is_train=False)
    sampler = InferenceSampler(len(dicts), comm.get_rank(), comm.get_world_size())
    return DataLoader(
        MapDataset(dicts, mapper),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=trivial_batch_collator,
    )


