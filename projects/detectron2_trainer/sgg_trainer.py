"""A plain detectron2 project that uses sgg's parts: ``SceneGraphTrainer`` is a detectron2 ``DefaultTrainer``
whose model, datasets, mapper and evaluators come from an sgg config, with sgg's ``MultiDatasetDynamicSampler``
as the ``sampler=`` of detectron2's ``build_detection_train_loader`` and sgg's evaluators run by detectron2's
``inference_on_dataset``. The optimizer is sgg's (``SOLVER.OPTIMIZER`` of the sgg config: AdamW for SpeaQ, with
sgg's parameter groups), clipped by detectron2's ``SOLVER.CLIP_GRADIENTS``; the LR schedule, hooks, checkpoints,
logging and ``launch`` are detectron2's, from the detectron2 config. See docs/detectron2.md.

The detectron2 config gets a section ``SGG``: ``CONFIG_FILE`` (an sgg YAML) and ``OPTS`` (sgg ``KEY VALUE``
overrides). Trainer settings (``SOLVER.*``, ``OUTPUT_DIR``, ``TEST.EVAL_PERIOD``, ``DATASETS.TEST``) are detectron2's.
"""

import logging
import os

from detectron2.config import CfgNode as D2CfgNode
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm

from sgg.config import get_cfg as get_sgg_cfg
from sgg.data import DatasetCatalog, build_mapper
from sgg.data.build import get_multi_dataset_dicts, multi_dataset_enabled
from sgg.data.samplers import MultiDatasetDynamicSampler
from sgg.evaluation import build_evaluator
from sgg.modeling import build_model
from sgg.solver import build_optimizer

__all__ = ["add_sgg_config", "sgg_config", "SceneGraphTrainer"]

logger = logging.getLogger(__name__)


def add_sgg_config(cfg: D2CfgNode) -> None:
    """Add the ``SGG`` section (``CONFIG_FILE``, ``OPTS``) to a detectron2 config."""
    cfg.SGG = D2CfgNode()
    cfg.SGG.CONFIG_FILE = ""
    cfg.SGG.OPTS = []


def sgg_config(cfg: D2CfgNode):
    """The sgg config named by ``cfg.SGG``, with its dataset options put in effect (what ``sgg.engine.setup``
    does for sgg's own tools)."""
    sgg_cfg = get_sgg_cfg()
    if cfg.SGG.CONFIG_FILE:
        sgg_cfg.merge_from_file(cfg.SGG.CONFIG_FILE)
    sgg_cfg.merge_from_list(list(cfg.SGG.OPTS))
    sgg_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    sgg_cfg.freeze()
    DatasetCatalog.configure(sgg_cfg)
    return sgg_cfg


class SceneGraphTrainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` training and evaluating an sgg model on sgg data."""

    @classmethod
    def build_model(cls, cfg):
        """sgg's ``MODEL.META_ARCHITECTURE`` (it returns a loss dict in training, as detectron2 expects)."""
        model = build_model(sgg_config(cfg))
        logger.info("sgg model: %s", type(model).__name__)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        """sgg's optimizer for the sgg config (its parameter groups and LR multipliers) at detectron2's
        ``SOLVER.BASE_LR`` (detectron2's LR schedule scales every group from its initial LR), with detectron2's
        ``SOLVER.CLIP_GRADIENTS`` (per-parameter value / norm clipping)."""
        sgg_cfg = sgg_config(cfg).clone()
        sgg_cfg.defrost()
        sgg_cfg.SOLVER.BASE_LR = cfg.SOLVER.BASE_LR
        return maybe_add_gradient_clipping(cfg, build_optimizer(sgg_cfg, model))

    @classmethod
    def build_train_loader(cls, cfg):
        """detectron2's train loader over sgg's real + synthetic dicts, batches composed by sgg's sampler."""
        sgg_cfg = sgg_config(cfg)
        if not multi_dataset_enabled(sgg_cfg):
            raise ValueError("SceneGraphTrainer mixes real and synthetic data: enable DATASETS.MULTI_DATASET in the "
                             "sgg config (cfg.SGG.CONFIG_FILE).")
        dicts = get_multi_dataset_dicts(sgg_cfg)
        world = comm.get_world_size()
        sampler = MultiDatasetDynamicSampler(sgg_cfg, dataset_dicts=dicts, batch_size=cfg.SOLVER.IMS_PER_BATCH // world,
                                             seed=cfg.SEED if cfg.SEED >= 0 else 0, rank=comm.get_rank(),
                                             world_size=world, flatten=True)
        first = sgg_cfg.DATASETS.MULTI_DATASET.REAL_DATASETS[0]
        return build_detection_train_loader(dicts, mapper=build_mapper(sgg_cfg, first, is_train=True),
                                            sampler=sampler, total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
                                            aspect_ratio_grouping=False, num_workers=cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader over an sgg dataset, mapped by the dataset's sgg test mapper."""
        sgg_cfg = sgg_config(cfg)
        return build_detection_test_loader(DatasetCatalog.get(dataset_name),
                                           mapper=build_mapper(sgg_cfg, dataset_name, is_train=False),
                                           num_workers=cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """sgg's evaluators for the dataset (its metadata's ``evaluator_type`` or the sgg config's
        ``TEST.EVALUATORS``); they follow detectron2's ``DatasetEvaluator`` protocol."""
        folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(sgg_config(cfg), dataset_name, folder)
