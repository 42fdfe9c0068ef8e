#!/usr/bin/env python
"""Seed-style training CLI: the single-dash flags of STTran / m3sgg (seed 000) translated into an sgg config.

Every flag becomes a config key (``-print_config`` shows the result, docs/sttran.md has the table); the run then goes
through exactly the code path of ``tools/train_net.py`` (``sgg.engine.default_main`` under ``sgg.engine.launch_cli``),
so outputs, checkpoints, ``--resume`` and evaluation are the same. Examples::

    python tools/train.py -mode predcls -datasize large -data_path data/action_genome -model sttran
    python tools/train.py -mode predcls -model sttran -data_path demo -epochs 12 -lr 1e-3 -save_path output/p
    python tools/train.py -mode sgcls -model sttran -data_path demo -resume_from output/p/model_final.pth \\
        -save_path output/s                      # progressive training: weights only, fresh optimizer
    python tools/train.py -model frequency_baseline -mode predcls -data_path demo -save_path output/freq
    python tools/train.py -model tempura -mode predcls -data_path demo -num_mixtures 3 -uncertainty_threshold 0.5 \\
        -gmm_regularization 0.01 -temporal_window 5 -save_path output/t   # TEMPURA flags: docs/tempura.md
    python tools/train.py -model oed -mode sgdet -oed_variant single -data_path demo -save_path output/o1
    python tools/train.py -model oed -mode sgdet -data_path demo -resume_from output/o1/model_final.pth \\
        -num_ref_frames 2 -interval1 4 -interval2 4 -save_path output/o2   # OED's two stages: docs/oed.md
    python tools/train.py -mode edgecls -model sttran -data_path data/EASG -resume_from ag_model_final.pth \\
        -save_path output/e   # EASG (docs/easg.md): STTran-EASG initialised from an Action Genome STTran

Epochs are converted to iterations (optimizer steps): ``MAX_ITER = ceil(epochs x videos / (batch_size x
accumulate_grad_batches x num_gpus))`` with ``videos`` = the training set size after the loader's filters.
``-data_path demo`` selects the procedural Action Genome twin (``demo_ag_*``) and the small demo configs.

EASG (docs/easg.md) is detected from ``-dataset EASG``, an EASG mode (``-mode edgecls`` / ``easgcls``; ``sgcls`` is
shared with AG), ``-data_path demo_easg`` (the procedural twin) or a ``-data_path`` folder holding EASG's
``objects.txt`` / ``relationships.txt`` / ``verbs.txt``. Then ``-model sttran`` is STTran-EASG, ``-model easg`` (or
``easg_linear``) EASG's linear baseline, ``-model frequency_baseline`` the EASG frequency prior, the configs come from
``configs/easg/`` (``configs/quick/easg_*_demo.yaml``), and ``-resume_from`` loads the weights that fit (an AG
checkpoint: backbone, box head, object projection ...) and logs what it skipped in one block.
Trailing ``KEY VALUE`` pairs are passed on as config overrides.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shlex
import sys
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sgg.config import get_cfg  # noqa: E402
from sgg.data.build import get_dataset_dicts  # noqa: E402
from sgg.data.catalog import DatasetCatalog  # noqa: E402
from sgg.engine import (  # noqa: E402
    add_local_rank_argument,
    default_argument_parser,
    default_main,
    evaluate_weights,
    launch_cli,
    setup,
)
from sgg.engine.output_dir import release_output_dir_lock  # noqa: E402
from sgg.model_zoo import get_config_file  # noqa: E402
from sgg.utils.errors import SGGError, run_cli  # noqa: E402

logger = logging.getLogger("sgg")

# Models sgg implements (flag value -> META_ARCHITECTURE) and the ones of the seed that it does not implement yet.
# One entry per line, so models added in parallel merge cleanly.
MODELS = {
    "sttran": "STTran",
    "tempura": "TEMPURA",
    "frequency_baseline": "VideoFrequencyBaseline",
    "stket": "STKET",
    "dsg-detr": "DSGDETR",
    "oed": "OED",
    "scenellm": "SceneLLM",
}
# Config-file stem of each model: configs/action_genome/<stem>_<mode>.yaml and, with -data_path demo,
# configs/quick/<stem>_demo.yaml (PredCls) / <stem>_<mode>_demo.yaml. The frequency baseline runs on STTran's configs.
CONFIG_STEMS = {
    "sttran": "sttran",
    "tempura": "tempura",
    "frequency_baseline": "sttran",
    "stket": "stket",
    "dsg-detr": "dsgdetr",
    "oed": "oed",
    "scenellm": "scenellm",
}
# TEMPURA's flags -> MODEL.TEMPURA keys (values as given; "None" spellings of upstream map to "none").
TEMPURA_FLAGS = {
    "num_mixtures": "MODEL.TEMPURA.NUM_MIXTURES",
    "uncertainty_threshold": "MODEL.TEMPURA.UNCERTAINTY_THRESHOLD",
    "gmm_regularization": "MODEL.TEMPURA.GMM_REGULARIZATION",
    "rel_mem_compute": "MODEL.TEMPURA.MEMORY.COMPUTE",
    "rel_mem_weight_type": "MODEL.TEMPURA.MEMORY.WEIGHT_TYPE",
    "mem_fusion": "MODEL.TEMPURA.MEMORY.FUSION",
    "mem_feat_selection": "MODEL.TEMPURA.MEMORY.FEAT_SELECTION",
    "mem_feat_lambda": "MODEL.TEMPURA.MEMORY.FEAT_LAMBDA",
    "rel_head": "MODEL.TEMPURA.REL_HEAD",
    "obj_head": "MODEL.TEMPURA.OBJ_HEAD",
    "obj_con_loss": "MODEL.TEMPURA.OBJ_CON_LOSS",
    "lambda_con": "MODEL.TEMPURA.LAMBDA_CON",
    "eos_coef": "MODEL.TEMPURA.EOS_COEF",
    "rel_loss_weighting": "MODEL.TEMPURA.REL_LOSS_WEIGHTING",
    "obj_loss_weighting": "MODEL.TEMPURA.OBJ_LOSS_WEIGHTING",
    "tracking": "MODEL.TEMPURA.TRACKING",
}
# SceneLLM's flags of m3sgg with a plain config key (-scenellm_training_stage, -freeze_llm_epochs and -llm_lr are
# translated in scenellm_overrides); -llm_name must be a local folder here (nothing is downloaded).
SCENELLM_FLAGS = {
    "llm_name": "MODEL.SCENELLM.LLM_PATH",
    "embed_dim": "MODEL.SCENELLM.CODE_DIM",
    "codebook_size": "MODEL.SCENELLM.CODEBOOK_SIZE",
    "commitment_cost": "MODEL.SCENELLM.COMMITMENT_COST",
    "lora_r": "MODEL.SCENELLM.LORA_R",
    "lora_alpha": "MODEL.SCENELLM.LORA_ALPHA",
    "lora_dropout": "MODEL.SCENELLM.LORA_DROPOUT",
}
SCENELLM_ALL_FLAGS = (*SCENELLM_FLAGS, "scenellm_training_stage", "freeze_llm_epochs", "llm_lr")
LORA_PATTERN = "llm.*lora_*"  # SOLVER.STAGE2.UNFREEZE entry selecting only the LoRA adapters
# Flags of one implemented model (flag -> its -model value); other models refuse them.
MODEL_FLAGS = {
    "tracker": "dsg-detr",
    "tracklet_chunk": "dsg-detr",
}
MODES = ("predcls", "sgcls", "sgdet")
# EASG (-dataset EASG or detected from -mode / -data_path; docs/easg.md): its modes, models and config stems
# (configs/easg/<stem>_<mode>.yaml, configs/quick/easg_<stem>_<mode>_demo.yaml).
EASG_MODES = ("edgecls", "sgcls", "easgcls")
EASG_MODELS = {
    "sttran": "STTranEASG",
    "easg": "EASGLinear",
    "easg_linear": "EASGLinear",
    "frequency_baseline": "EASGFrequencyBaseline",
}
EASG_CONFIG_STEMS = {"sttran": "sttran", "easg": "linear", "easg_linear": "linear", "frequency_baseline": "linear"}
EASG_FILES = ("objects.txt", "relationships.txt", "verbs.txt")
EASG_PLATEAU_METRIC = "easg/score"
SCHEDULERS = {"step": "WarmupMultiStepLR", "cosine": "WarmupCosineLR", "plateau": "WarmupPlateau",
              "constant": "Constant"}
OPTIMIZERS = {"adamw": "AdamW", "adam": "AdamW", "sgd": "SGD"}  # adam = AdamW with weight decay 0
PLATEAU_METRIC = "video_sgg/with/R@20"
# STKET's flags (upstream's lib/config.py spellings) -> config keys; they configure -model stket only.
STKET_FLAGS = {
    "window_size": "MODEL.STKET.WINDOW_SIZE",
    "pred_contact_threshold": "MODEL.STKET.CONTACT_THRESHOLD",
    "N_layer": "MODEL.STKET.N_LAYER",
    "enc_layer_num": "MODEL.STTRAN.ENC_LAYERS",
    "dec_layer_num": "MODEL.STTRAN.DEC_LAYERS",
    "use_spatial_prior": "MODEL.STKET.USE_SPATIAL_PRIOR",
    "use_temporal_prior": "MODEL.STKET.USE_TEMPORAL_PRIOR",
    "spatial_prior_loss": "MODEL.STKET.SPATIAL_PRIOR_LOSS",
    "temporal_prior_loss": "MODEL.STKET.TEMPORAL_PRIOR_LOSS",
    "prior_file": "MODEL.STKET.PRIOR_FILE",
}


# OED's flags (m3sgg / upstream spellings) -> MODEL.OED keys; they configure -model oed only.
OED_FLAGS = {
    "num_queries": "MODEL.OED.NUM_QUERIES",
    "dec_layers_hopd": "MODEL.OED.DEC_LAYERS_HOPD",
    "dec_layers_interaction": "MODEL.OED.DEC_LAYERS_INTERACTION",
    "num_ref_frames": "MODEL.OED.NUM_REF_FRAMES",
    "interval1": "MODEL.OED.INTERVAL_TRAIN",
    "interval2": "MODEL.OED.INTERVAL_TEST",
    "alpha": "MODEL.OED.FOCAL_ALPHA",
    "bbox_loss_coef": "MODEL.OED.BBOX_LOSS_COEF",
    "giou_loss_coef": "MODEL.OED.GIOU_LOSS_COEF",
    "obj_loss_coef": "MODEL.OED.OBJ_LOSS_COEF",
    "rel_loss_coef": "MODEL.OED.REL_LOSS_COEF",
    "oed_eos_coef": "MODEL.OED.EOS_COEF",
    "causal": "MODEL.OED.CAUSAL",
}
# OED flags of upstream / m3sgg for parts sgg does not build (refused with a reason instead of silently ignored).
OED_UNBUILT_FLAGS = {
    "oed_use_matching": "upstream's extra matching head (--use_matching) is not built",
    "fuse_semantic_pos": "upstream's semantic/position fusion into the relation queries is not built",
}


class SeedFlagError(SGGError, ValueError):
    """A seed-style flag that sgg cannot honour (unknown model, unbuilt model's flag, bad value)."""


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The seed's flags (single dash) plus STTran's own spellings (``-enc_layer``, ``-nepoch`` ...)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    a = p.add_argument
    a("-mode", default="predcls", choices=MODES + tuple(m for m in EASG_MODES if m not in MODES),
      help="predcls, sgcls or sgdet; EASG: edgecls, sgcls or easgcls (TEST.RELATION.MODE)")
    a("-model", default="sttran", help=f"one of {', '.join(MODELS)}; EASG: {', '.join(EASG_MODELS)}")
    a("-data_path", default="", help="Action Genome root (DATASETS.AG.ROOT) or EASG root (DATASETS.EASG.ROOT); "
                                     "'demo' = the procedural AG twin, 'demo_easg' = the EASG twin")
    a("-dataset", default="", help="action_genome or EASG (the seed's flag; default: detected from -mode / "
                                   "-data_path)")
    a("-datasize", default="large", choices=("small", "mini", "large"),
      help="small/mini = STTran's first 80 000 person-box keys (DATASETS.AG.DATASIZE mini)")
    a("-config", default="", help="base config file (default: configs/action_genome/sttran_<mode>.yaml, or the "
                                  "quick demo config with -data_path demo)")
    a("-lr", type=float, help="SOLVER.BASE_LR")
    a("-batch_size", type=int, default=None,
      help="videos (EASG: graphs) per step per process (SOLVER.IMS_PER_BATCH = batch_size x accumulate_grad_batches "
           "x num_gpus); default 1, on EASG the config's IMS_PER_BATCH")
    a("-epochs", "-nepoch", dest="epochs", type=float, help="epochs -> SOLVER.MAX_ITER (see the module docstring)")
    a("-save_path", default="", help="OUTPUT_DIR")
    a("-resume_from", "-ckpt", "-model_path", dest="resume_from", default="",
      help="checkpoint whose weights initialise the model (MODEL.WEIGHTS; optimizer state is not restored)")
    a("-resume", action="store_true", help="exact resume of -save_path's last checkpoint (train_net --resume)")
    a("-eval_only", action="store_true", help="evaluate -resume_from on the test set and exit")
    a("-use_amp", type=_bool, help="mixed precision (SOLVER.AMP.ENABLED; CUDA only)")
    a("-opt_level", choices=("O0", "O1", "O2"), help="apex-style level: O0 = fp32, O1/O2 = AMP float16")
    a("-accumulate_grad_batches", type=int, default=1, help="SOLVER.ACCUMULATE_GRAD_STEPS")
    a("-spatial_layer", "-enc_layer", dest="spatial_layer", type=int, help="MODEL.STTRAN.ENC_LAYERS")
    a("-temporal_layer", "-dec_layer", dest="temporal_layer", type=int, help="MODEL.STTRAN.DEC_LAYERS")
    a("-hidden_dim", type=int, help="MODEL.STTRAN.VISUAL_DIM (relation dim = 3 x hidden_dim + 2 x EMBED_DIM)")
    a("-num_heads", type=int, help="MODEL.STTRAN.NUM_HEADS")
    a("-dropout", type=float, help="MODEL.STTRAN.DROPOUT")
    a("-temporal_window", type=int, help="MODEL.STTRAN.TEMPORAL_WINDOW (frames per temporal-decoder window)")
    a("-bce_loss", action="store_true", help="BCE instead of multi-label margin loss (MODEL.STTRAN.MULTI_LABEL_LOSS)")
    a("-word_vectors", help="local GloVe text file (MODEL.STTRAN.WORD_VECTORS)")
    a("-optimizer", choices=tuple(OPTIMIZERS), help="adamw / adam (= AdamW, weight decay 0) / sgd")
    a("-weight_decay", type=float, help="SOLVER.WEIGHT_DECAY")
    a("-clip_grad", type=float, help="gradient-norm clip (SOLVER.CLIP_GRADIENTS; 0 = off)")
    a("-warmup_steps", type=int, help="SOLVER.WARMUP_ITERS")
    a("-scheduler", choices=tuple(SCHEDULERS), help="step / cosine / plateau (on R@20 with constraint) / constant")
    a("-save_freq", type=float, help="checkpoint every N epochs (SOLVER.CHECKPOINT_PERIOD)")
    a("-eval_freq", type=float, help="evaluate every N epochs (TEST.EVAL_PERIOD)")
    a("-patience", type=int, help="early stopping: evaluations without improvement before training stops "
      "(SOLVER.EARLY_STOPPING.PATIENCE; enables it)")
    a("-min_delta", type=float, help="early stopping: smallest gain that counts, in the metric's units (video_sgg "
      "recalls are percent) (SOLVER.EARLY_STOPPING.MIN_DELTA)")
    a("-monitor", help="early stopping metric: val_recall@K / val_mean_recall@K (R@K / mR@K with constraint) or an "
      "evaluation key such as video_sgg/no/R@50 (SOLVER.EARLY_STOPPING.METRIC; default R@20 with constraint)")
    a("-seed", type=int, help="SEED")
    a("-device", help="MODEL.DEVICE (cuda / cpu)")
    a("-num_gpus", type=int, default=1, help="worker processes (train_net --num-gpus; CPU: gloo workers)")
    a("-distributed", type=_bool, help="the seed's switch: needs -num_gpus N > 1 or a torchrun launch")
    a("-print_config", action="store_true", help="print the translated train_net command and config, then exit")
    # TEMPURA (MODEL.TEMPURA.*, docs/tempura.md): the seed's flags and upstream's spellings
    a("-num_mixtures", "-K", dest="num_mixtures", type=int, help="MODEL.TEMPURA.NUM_MIXTURES (GMM components)")
    a("-uncertainty_threshold", type=float,
      help="MODEL.TEMPURA.UNCERTAINTY_THRESHOLD: pairs with mean(aleatoric + epistemic) above it are flagged uncertain")
    a("-gmm_regularization", type=float,
      help="MODEL.TEMPURA.GMM_REGULARIZATION: weight of KL(N(mu, var) || N(mu, 1)) on the mixture variances")
    a("-rel_mem_compute", choices=("none", "None", "joint"), help="MODEL.TEMPURA.MEMORY.COMPUTE (none = no memory)")
    a("-rel_mem_weight_type", choices=("simple", "al", "ep", "both"), help="MODEL.TEMPURA.MEMORY.WEIGHT_TYPE")
    a("-mem_fusion", choices=("early", "late"), help="MODEL.TEMPURA.MEMORY.FUSION")
    a("-mem_feat_selection", choices=("manual", "automated"), help="MODEL.TEMPURA.MEMORY.FEAT_SELECTION")
    a("-mem_feat_lambda", type=float, help="MODEL.TEMPURA.MEMORY.FEAT_LAMBDA")
    a("-rel_head", choices=("gmm", "linear"), help="MODEL.TEMPURA.REL_HEAD")
    a("-obj_head", choices=("gmm", "linear"), help="MODEL.TEMPURA.OBJ_HEAD")
    a("-obj_con_loss", choices=("none", "None", "euc_con"), help="MODEL.TEMPURA.OBJ_CON_LOSS")
    a("-lambda_con", type=float, help="MODEL.TEMPURA.LAMBDA_CON")
    a("-eos_coef", type=float, help="MODEL.TEMPURA.EOS_COEF (object cross-entropy weight of class 0)")
    a("-rel_loss_weighting", choices=("none", "al", "ep", "both"), help="MODEL.TEMPURA.REL_LOSS_WEIGHTING")
    a("-obj_loss_weighting", choices=("none", "al", "ep", "both"), help="MODEL.TEMPURA.OBJ_LOSS_WEIGHTING")
    a("-tracking", action="store_true", default=None, help="MODEL.TEMPURA.TRACKING (object tracking branch)")
    a("-mlm", action="store_true", default=None, help="MODEL.TEMPURA.MULTI_LABEL_LOSS margin (default BCE)")
    # STKET (-model stket; docs/stket.md). Upstream's switches are store_true flags; here a bare switch means True,
    # "False" turns it off, and an absent one keeps the config's value (the published command's: all on).
    a("-window_size", type=int, help="STKET: ensemble window in frames (MODEL.STKET.WINDOW_SIZE)")
    a("-pred_contact_threshold", type=float, help="STKET: contact-set threshold (MODEL.STKET.CONTACT_THRESHOLD)")
    a("-N_layer", type=int, help="STKET: spatial -> temporal repeats (MODEL.STKET.N_LAYER)")
    a("-enc_layer_num", type=int, help="STKET: spatial encoder layers (MODEL.STTRAN.ENC_LAYERS)")
    a("-dec_layer_num", type=int, help="STKET: temporal decoder layers (MODEL.STTRAN.DEC_LAYERS)")
    for switch in ("use_spatial_prior", "use_temporal_prior", "spatial_prior_loss", "temporal_prior_loss"):
        a(f"-{switch}", type=_bool, nargs="?", const=True, help=f"STKET: {STKET_FLAGS[switch]}")
    a("-prior_file", help="STKET: prior JSON (MODEL.STKET.PRIOR_FILE; default: counted on the training split)")
    # DSG-DETR (-model dsg-detr, docs/dsgdetr.md). Upstream has no flags of its own (its -enc_layer / -dec_layer are
    # the spatial / temporal encoder depths, mapped above); these two are sgg's.
    a("-tracker", choices=("hungarian", "class", "none"), help="DSG-DETR: MODEL.DSGDETR.TRACKING")
    a("-tracklet_chunk", type=int, help="DSG-DETR: MODEL.DSGDETR.TRACKLET_CHUNK (0 = whole tracklets)")
    # OED (-model oed, docs/oed.md): m3sgg's flags. -oed_variant single = the spatial stage (configs ..._spatial..),
    # multi (default) = the temporal stage (progressive refinement), which starts from -resume_from SPATIAL_CKPT.
    a("-num_queries", type=int, help="OED: SGDet pair queries (MODEL.OED.NUM_QUERIES)")
    a("-dec_layers_hopd", type=int, help="OED: instance decoder layers (MODEL.OED.DEC_LAYERS_HOPD)")
    a("-dec_layers_interaction", type=int, help="OED: relation decoder layers (MODEL.OED.DEC_LAYERS_INTERACTION)")
    a("-num_ref_frames", type=int, help="OED: reference frames per key frame (MODEL.OED.NUM_REF_FRAMES)")
    a("-interval1", type=int, help="OED: training reference window +- frames (MODEL.OED.INTERVAL_TRAIN)")
    a("-interval2", type=int, help="OED: test reference window +- frames (MODEL.OED.INTERVAL_TEST)")
    a("-alpha", type=float, help="OED: focal alpha of the spatial / contacting loss (MODEL.OED.FOCAL_ALPHA)")
    a("-bbox_loss_coef", type=float, help="OED: MODEL.OED.BBOX_LOSS_COEF")
    a("-giou_loss_coef", type=float, help="OED: MODEL.OED.GIOU_LOSS_COEF")
    a("-obj_loss_coef", type=float, help="OED: MODEL.OED.OBJ_LOSS_COEF")
    a("-rel_loss_coef", type=float, help="OED: MODEL.OED.REL_LOSS_COEF")
    a("-oed_eos_coef", type=float, help="OED: no-object CE weight (MODEL.OED.EOS_COEF)")
    a("-causal", type=_bool, nargs="?", const=True, help="OED: past reference frames only (MODEL.OED.CAUSAL)")
    a("-oed_variant", choices=("single", "multi"), help="OED: single = spatial stage, multi = temporal stage "
                                                         "(MODEL.OED.STAGE; default multi)")
    a("-query_temporal_interaction", action="store_true", default=None,
      help="OED: upstream's temporal-stage switch (= -oed_variant multi)")
    for flag, why in OED_UNBUILT_FLAGS.items():
        a(f"-{flag}", action="store_true", default=None, help=f"OED: refused ({why})")
    # SceneLLM (-model scenellm, docs/scenellm.md): sgg's stages and m3sgg's flags
    a("-scenellm_training_stage", choices=("vqvae", "stage1", "stage2"),
      help="SceneLLM: MODEL.SCENELLM.TRAINING_STAGE (vqvae: the VQ-VAE alone; stage1: LLM + LoRA frozen; stage2: "
           "+ LoRA); without -freeze_llm_epochs the stage holds for the whole run")
    a("-freeze_llm_epochs", type=float, help="SceneLLM: stage 1 for N epochs, then stage 2 (the LoRA adapters "
                                             "train) through SOLVER.STAGE2 (START_ITER = N epochs)")
    a("-llm_lr", type=float, help="SceneLLM: LR of the LLM's parameters (LoRA), as SOLVER.LR_MULTIPLIERS "
                                  "['llm', llm_lr / lr]")
    a("-llm_name", help="SceneLLM: local transformers model folder (MODEL.SCENELLM.LLM_PATH; no download)")
    a("-embed_dim", type=int, help="SceneLLM: VQ code width (MODEL.SCENELLM.CODE_DIM)")
    a("-codebook_size", type=int, help="SceneLLM: MODEL.SCENELLM.CODEBOOK_SIZE")
    a("-commitment_cost", type=float, help="SceneLLM: MODEL.SCENELLM.COMMITMENT_COST")
    a("-lora_r", type=int, help="SceneLLM: MODEL.SCENELLM.LORA_R")
    a("-lora_alpha", type=float, help="SceneLLM: MODEL.SCENELLM.LORA_ALPHA")
    a("-lora_dropout", type=float, help="SceneLLM: MODEL.SCENELLM.LORA_DROPOUT")
    add_local_rank_argument(p)  # python -m torch.distributed.launch passes --local-rank N
    a("opts", nargs=argparse.REMAINDER, help="trailing KEY VALUE config overrides")
    return p


def is_easg(args) -> bool:
    """True when the run is on EASG: ``-dataset EASG``, an EASG-only mode, ``-data_path demo_easg`` or an EASG root."""
    dataset = args.dataset.lower().replace("-", "_")
    if dataset not in ("", "easg", "action_genome", "ag"):
        raise SeedFlagError(f"-dataset {args.dataset}: give action_genome or EASG.")
    if dataset:
        return dataset == "easg"
    if args.mode in EASG_MODES and args.mode not in MODES or args.data_path == "demo_easg":
        return True
    path = args.data_path
    return bool(path) and path != "demo" and all(os.path.isfile(os.path.join(path, f)) for f in EASG_FILES)


def base_config(args) -> str:
    """The config file a run starts from."""
    if args.config:
        return args.config
    if is_easg(args):
        stem = EASG_CONFIG_STEMS[args.model.lower()]
        if args.data_path == "demo_easg":
            return get_config_file(f"quick/easg_{stem}_{args.mode}_demo.yaml")
        return get_config_file(f"easg/{stem}_{args.mode}.yaml")
    stem = CONFIG_STEMS.get(args.model.lower(), "sttran")
    # OED's spatial stage has its own configs (<stem>_spatial_demo.yaml / <stem>_<mode>_spatial.yaml)
    spatial = args.model.lower() == "oed" and oed_stage(args) == "spatial"
    if args.data_path == "demo":
        name = f"{stem}_demo.yaml" if args.mode == "predcls" else f"{stem}_{args.mode}_demo.yaml"
        if spatial:
            name = name.replace("_demo.yaml", "_spatial_demo.yaml")
        return get_config_file(f"quick/{name}")
    return get_config_file(f"action_genome/{stem}_{args.mode}{'_spatial' if spatial else ''}.yaml")


def oed_stage(args) -> str:
    """OED's stage from -oed_variant / -query_temporal_interaction: "spatial" (single) or "temporal" (multi)."""
    return "spatial" if args.oed_variant == "single" else "temporal"


def check_flags(args) -> None:
    """Refuse models and flags sgg does not implement, naming what exists."""
    name = args.model.lower()
    easg = is_easg(args)
    if easg:
        if args.mode not in EASG_MODES:
            raise SeedFlagError(f"-mode {args.mode}: EASG's modes are {', '.join(EASG_MODES)} (edgecls = GT verb and "
                                "objects, the PredCls of EASG).")
        if name not in EASG_MODELS:
            raise SeedFlagError(f"-model {args.model}: on EASG sgg has {', '.join(EASG_MODELS)} (sttran = "
                                "STTran-EASG, easg = EASG's linear baseline).")
        if args.data_path == "demo":
            raise SeedFlagError("-data_path demo is the Action Genome twin; the EASG twin is -data_path demo_easg.")
    elif args.mode not in MODES:
        raise SeedFlagError(f"-mode {args.mode} is an EASG mode, but -dataset {args.dataset} is not EASG.")
    elif args.data_path == "demo_easg":
        raise SeedFlagError("-data_path demo_easg is the EASG twin; drop -dataset action_genome.")
    if name not in MODELS and not easg:
        raise SeedFlagError(f"-model {args.model}: unknown model. Available models: {', '.join(MODELS)}.")
    if name != "tempura":
        for flag in (*TEMPURA_FLAGS, "mlm"):
            if getattr(args, flag) is not None:
                raise SeedFlagError(f"-{flag} configures TEMPURA (-model tempura); it would be ignored by -model "
                                    f"{args.model}, so it is refused. Available models: {', '.join(MODELS)}.")
    stket_given = [f"-{flag}" for flag in STKET_FLAGS if getattr(args, flag) is not None]
    if stket_given and name != "stket":
        raise SeedFlagError(f"{', '.join(stket_given)} configure(s) STKET; -model {args.model} would ignore them, so "
                            "they are refused. Use -model stket.")
    if args.pred_contact_threshold is not None and not 0.0 < args.pred_contact_threshold < 1.0:
        raise SeedFlagError(f"-pred_contact_threshold {args.pred_contact_threshold}: give a probability in (0, 1). "
                            "Upstream's test script uses 1.0 to feed the ground-truth contacting labels into "
                            "inference; sgg always uses the predicted contact set (upstream trains with 0.8).")
    oed_given = [f"-{flag}" for flag in (*OED_FLAGS, "oed_variant", "query_temporal_interaction")
                 if getattr(args, flag) is not None]
    if oed_given and name != "oed":
        raise SeedFlagError(f"{', '.join(oed_given)} configure(s) OED; -model {args.model} would ignore them, so "
                            "they are refused. Use -model oed.")
    for flag, why in OED_UNBUILT_FLAGS.items():
        if getattr(args, flag):
            raise SeedFlagError(f"-{flag}: {why} in sgg (docs/oed.md); refused rather than ignored.")
    if args.oed_variant == "single" and args.query_temporal_interaction:
        raise SeedFlagError("-oed_variant single is the spatial stage; -query_temporal_interaction asks for the "
                            "temporal one. Give one of them.")
    if name == "oed" and args.mode == "sgcls":
        raise SeedFlagError("-model oed -mode sgcls: OED's SGCls variant is not built in sgg (upstream has no "
                            "script or published number for it); use -mode predcls or -mode sgdet.")
    scenellm_given = [f"-{flag}" for flag in SCENELLM_ALL_FLAGS if getattr(args, flag) is not None]
    if scenellm_given and name != "scenellm":
        raise SeedFlagError(f"{', '.join(scenellm_given)} configure(s) SceneLLM; -model {args.model} would ignore "
                            "them, so they are refused. Use -model scenellm (available models: "
                            f"{', '.join(MODELS)}).")
    if args.freeze_llm_epochs is not None:
        if args.freeze_llm_epochs < 0:
            raise SeedFlagError(f"-freeze_llm_epochs must be >= 0, got {args.freeze_llm_epochs}.")
        if args.scenellm_training_stage == "vqvae":
            raise SeedFlagError("-freeze_llm_epochs schedules stage 1 -> stage 2; the vqvae stage trains the VQ-VAE "
                                "alone. Drop one of them.")
    if args.llm_lr is not None and args.llm_lr < 0:
        raise SeedFlagError(f"-llm_lr must be >= 0, got {args.llm_lr}.")
    for flag, model in MODEL_FLAGS.items():
        if getattr(args, flag) is not None and name != model:
            raise SeedFlagError(f"-{flag} configures -model {model}; -model {args.model} would ignore it, so it is "
                                "refused.")
    for flag in ("batch_size", "accumulate_grad_batches", "num_gpus"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise SeedFlagError(f"-{flag} must be >= 1, got {getattr(args, flag)}.")
    if args.epochs is not None and args.epochs <= 0:
        raise SeedFlagError(f"-epochs must be > 0, got {args.epochs}.")
    if args.distributed and args.num_gpus == 1 and "WORLD_SIZE" not in os.environ:
        raise SeedFlagError("-distributed True: give -num_gpus N (N worker processes; CPU: gloo) or start the command "
                            "with torchrun, which sgg joins automatically.")
    if args.eval_only and not args.resume_from and name != "frequency_baseline":
        raise SeedFlagError("-eval_only needs the checkpoint to evaluate: -resume_from PATH (or -ckpt PATH).")
    if args.resume and args.resume_from:
        raise SeedFlagError("-resume continues -save_path's own last checkpoint (model, optimizer, iteration); "
                            "-resume_from loads weights only into a new run. Give one of them.")


def num_processes(args) -> int:
    """Training processes: ``-num_gpus`` spawned here, or the ``WORLD_SIZE`` of a torchrun /
    ``torch.distributed.launch`` group this process joins (then ``-num_gpus`` must stay 1)."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        if args.num_gpus != 1:
            raise SeedFlagError(f"-num_gpus {args.num_gpus} under torchrun / torch.distributed.launch: the launcher "
                                f"already started {os.environ['WORLD_SIZE']} processes; drop -num_gpus.")
        return int(os.environ["WORLD_SIZE"])
    return args.num_gpus


def monitor_metric(name: str) -> str:
    """The seed's ``-monitor`` names -> sgg's evaluation keys: ``val_recall@K`` / ``recall@K`` / ``R@K`` ->
    ``video_sgg/with/R@K`` and ``val_mean_recall@K`` / ``mR@K`` -> ``video_sgg/with/mR@K``; a key with a ``/`` is used
    as given."""
    if "/" in name:
        return name
    match = re.fullmatch(r"(?:val_)?(recall|mean_recall|R|mR)@(\d+)", name.strip())
    if match is None:
        raise SeedFlagError(f"-monitor {name}: give val_recall@K, val_mean_recall@K or an evaluation key such as "
                            f"{PLATEAU_METRIC} (a run's inference/<dataset>/results.json lists them).")
    kind = "mR" if match.group(1) in ("mean_recall", "mR") else "R"
    return f"video_sgg/with/{kind}@{match.group(2)}"


def static_overrides(args) -> List[Tuple[str, object]]:
    """(config key, value) pairs that follow from the flags alone (not from the dataset size)."""
    easg = is_easg(args)
    arch = EASG_MODELS[args.model.lower()] if easg else MODELS[args.model.lower()]
    o: List[Tuple[str, object]] = [("TEST.RELATION.MODE", args.mode), ("MODEL.META_ARCHITECTURE", arch)]
    if easg and args.data_path and args.data_path != "demo_easg":
        o += [("DATASETS.EASG.ROOT", args.data_path), ("DATASETS.TRAIN", ("easg_train",)),
              ("DATASETS.TEST", ("easg_val",))]
    elif not easg and args.data_path and args.data_path != "demo":
        o += [("DATASETS.AG.ROOT", args.data_path), ("DATASETS.TRAIN", ("ag_train",)),
              ("DATASETS.TEST", ("ag_test",))]
    o.append(("DATASETS.AG.DATASIZE", "large" if args.datasize == "large" else "mini"))
    o.append(("SOLVER.ACCUMULATE_GRAD_STEPS", args.accumulate_grad_batches))
    # EASG's configs batch several graphs per step (the demo: 4); AG's one video, the seed's default.
    batch = args.batch_size if args.batch_size is not None else (None if easg else 1)
    if batch is not None:
        o.append(("SOLVER.IMS_PER_BATCH", batch * args.accumulate_grad_batches * num_processes(args)))
    simple = {"lr": "SOLVER.BASE_LR", "spatial_layer": "MODEL.STTRAN.ENC_LAYERS",
              "temporal_layer": "MODEL.STTRAN.DEC_LAYERS", "hidden_dim": "MODEL.STTRAN.VISUAL_DIM",
              "num_heads": "MODEL.STTRAN.NUM_HEADS", "dropout": "MODEL.STTRAN.DROPOUT",
              "temporal_window": "MODEL.STTRAN.TEMPORAL_WINDOW", "word_vectors": "MODEL.STTRAN.WORD_VECTORS",
              "weight_decay": "SOLVER.WEIGHT_DECAY", "warmup_steps": "SOLVER.WARMUP_ITERS", "seed": "SEED",
              "device": "MODEL.DEVICE", "save_path": "OUTPUT_DIR", "resume_from": "MODEL.WEIGHTS"}
    simple.update(STKET_FLAGS)
    simple.update(SCENELLM_FLAGS)
    for flag, key in simple.items():
        value = getattr(args, flag)
        if value is not None and value != "":
            o.append((key, value))
    if args.resume_from and not args.eval_only:
        # Progressive training (PredCls -> SGCls -> SGDet): the new mode's modules (object classifier, detector) are
        # not in the previous mode's checkpoint and keep their initialisation; the trainer logs what was skipped.
        o.append(("MODEL.ALLOW_PARTIAL_WEIGHTS", True))
    if args.patience is not None or args.min_delta is not None or args.monitor is not None:
        # The seed's EarlyStopping(patience, min_delta, monitor); evaluations come every -eval_freq epochs.
        o.append(("SOLVER.EARLY_STOPPING.ENABLED", True))
        o.append(("SOLVER.EARLY_STOPPING.METRIC", monitor_metric(args.monitor or "val_recall@20")))
        if args.patience is not None:
            o.append(("SOLVER.EARLY_STOPPING.PATIENCE", args.patience))
        if args.min_delta is not None:
            o.append(("SOLVER.EARLY_STOPPING.MIN_DELTA", args.min_delta))
    if args.bce_loss:
        o.append(("MODEL.STTRAN.MULTI_LABEL_LOSS", "bce"))
    for flag, key in TEMPURA_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            o.append((key, "none" if value == "None" else value))
    if args.mlm:
        o.append(("MODEL.TEMPURA.MULTI_LABEL_LOSS", "margin"))
    # OED
    for flag, key in OED_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            o.append((key, value))
    if args.model.lower() == "oed":
        o.append(("MODEL.OED.STAGE", oed_stage(args)))
    # DSG-DETR
    if args.tracker is not None:
        o.append(("MODEL.DSGDETR.TRACKING", args.tracker))
    if args.tracklet_chunk is not None:
        o.append(("MODEL.DSGDETR.TRACKLET_CHUNK", args.tracklet_chunk))
    amp = args.use_amp
    if args.opt_level is not None:
        amp = args.opt_level != "O0"
    if amp is not None:
        o.append(("SOLVER.AMP.ENABLED", bool(amp)))
    if args.optimizer is not None:
        o.append(("SOLVER.OPTIMIZER", OPTIMIZERS[args.optimizer]))
        if args.optimizer == "adam" and args.weight_decay is None:
            o.append(("SOLVER.WEIGHT_DECAY", 0.0))
    if args.clip_grad is not None:
        o.append(("SOLVER.CLIP_GRADIENTS.ENABLED", args.clip_grad > 0))
        if args.clip_grad > 0:
            o += [("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm"), ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", args.clip_grad)]
    if args.scheduler is not None:
        o.append(("SOLVER.LR_SCHEDULER_NAME", SCHEDULERS[args.scheduler]))
        if args.scheduler == "plateau":
            o.append(("SOLVER.PLATEAU.METRIC", EASG_PLATEAU_METRIC if easg else PLATEAU_METRIC))
    return o


def load_config(config_file: str, overrides: List[Tuple[str, object]], opts: List[str]):
    """Defaults + file + (key, value) overrides + trailing KEY VALUE opts, unfrozen."""
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list([x for kv in overrides for x in kv])
    cfg.merge_from_list(opts)
    return cfg


def count_train_videos(cfg) -> int:
    """Videos of ``DATASETS.TRAIN`` after the loader's filters (what one epoch iterates over)."""
    DatasetCatalog.configure(cfg)
    return len(get_dataset_dicts(cfg.DATASETS.TRAIN))


def epoch_overrides(args, cfg, num_videos: int) -> List[Tuple[str, object]]:
    """MAX_ITER / EVAL_PERIOD / CHECKPOINT_PERIOD / STEPS from the epoch flags and the dataset size."""
    per_step = cfg.SOLVER.IMS_PER_BATCH
    iters_per_epoch = max(math.ceil(num_videos / per_step), 1)
    o: List[Tuple[str, object]] = []
    max_iter = cfg.SOLVER.MAX_ITER
    if args.epochs is not None:
        max_iter = max(math.ceil(args.epochs * num_videos / per_step), 1)
        o.append(("SOLVER.MAX_ITER", max_iter))
        o.append(("SOLVER.ITERS_PER_EPOCH", iters_per_epoch))  # log lines show the epoch
        if args.eval_freq is None:  # STTran evaluates after every epoch
            o.append(("TEST.EVAL_PERIOD", iters_per_epoch))
        if args.save_freq is None:
            o.append(("SOLVER.CHECKPOINT_PERIOD", iters_per_epoch))
    if args.eval_freq is not None:
        o.append(("TEST.EVAL_PERIOD", max(round(args.eval_freq * iters_per_epoch), 1)))
    if args.freeze_llm_epochs:
        o.append(("SOLVER.STAGE2.START_ITER", max(math.ceil(args.freeze_llm_epochs * num_videos / per_step), 1)))
    if args.save_freq is not None:
        o.append(("SOLVER.CHECKPOINT_PERIOD", max(round(args.save_freq * iters_per_epoch), 1)))
    if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR" and args.scheduler == "step":
        o.append(("SOLVER.STEPS", (max(int(0.7 * max_iter), 1),)))
    return o


def scenellm_overrides(args, cfg) -> List[Tuple[str, object]]:
    """SceneLLM's stage and LLM-LR flags. ``-freeze_llm_epochs N`` (N > 0): stage 1, and SOLVER.STAGE2 unfreezes the
    LoRA adapters after N epochs (START_ITER from :func:`epoch_overrides`); N = 0: stage 2 from the start.
    ``-scenellm_training_stage`` alone: that stage for the whole run (the stage hook off). ``-llm_lr``: the LLM's
    LR as a multiplier of ``SOLVER.BASE_LR`` in ``SOLVER.LR_MULTIPLIERS`` (an earlier ``llm`` entry is replaced)."""
    o: List[Tuple[str, object]] = []
    if args.freeze_llm_epochs is not None:
        stage = "stage1" if args.freeze_llm_epochs > 0 else "stage2"
        o += [("MODEL.SCENELLM.TRAINING_STAGE", stage), ("SOLVER.STAGE2.ENABLED", args.freeze_llm_epochs > 0)]
        if args.freeze_llm_epochs > 0:
            o += [("SOLVER.STAGE2.UNFREEZE", (LORA_PATTERN,)), ("SOLVER.STAGE2.LR_FACTOR", 1.0)]
    elif args.scenellm_training_stage is not None:
        o += [("MODEL.SCENELLM.TRAINING_STAGE", args.scenellm_training_stage), ("SOLVER.STAGE2.ENABLED", False)]
    if args.llm_lr is not None:
        if cfg.SOLVER.BASE_LR <= 0:
            raise SeedFlagError(f"-llm_lr {args.llm_lr}: SOLVER.BASE_LR is {cfg.SOLVER.BASE_LR}; give -lr > 0 (the "
                                "LLM's LR is a multiple of it).")
        kept = [tuple(item) for item in cfg.SOLVER.LR_MULTIPLIERS if str(item[0]) != "llm"]
        o.append(("SOLVER.LR_MULTIPLIERS", tuple(kept) + (("llm", args.llm_lr / cfg.SOLVER.BASE_LR),)))
    return o


def translate(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """Parse seed-style ``argv`` -> ``{"args", "config_file", "overrides", "train_net_argv", "num_videos"}``."""
    args = build_parser().parse_args(argv)
    check_flags(args)
    config_file = base_config(args)
    overrides = static_overrides(args)
    opts = list(args.opts or [])
    if opts and opts[0] == "--":
        opts = opts[1:]
    cfg = load_config(config_file, overrides, opts)
    num_videos = None
    # TEMPURA refreshes its predicate memory once per epoch: it needs the epoch's size in videos.
    memory = args.model.lower() == "tempura" and cfg.MODEL.TEMPURA.MEMORY.COMPUTE != "none"
    if args.model.lower() == "scenellm":
        overrides += scenellm_overrides(args, cfg)
    if (args.epochs is not None or args.eval_freq is not None or args.save_freq is not None or memory
            or args.freeze_llm_epochs):
        num_videos = count_train_videos(cfg)
        if num_videos == 0:
            raise SeedFlagError(f"The training set {cfg.DATASETS.TRAIN} is empty after the loader's filters; "
                                "check -data_path / -datasize.")
        overrides += epoch_overrides(args, cfg, num_videos)
        if memory:
            overrides.append(("MODEL.TEMPURA.MEMORY.EPOCH_VIDEOS", num_videos))
    flat = [_format_value(x) for kv in overrides for x in kv]
    train_net_argv = ["--config-file", config_file, "--num-gpus", str(args.num_gpus)]
    if args.resume:
        train_net_argv.append("--resume")
    if args.eval_only:
        train_net_argv.append("--eval-only")
    train_net_argv += flat + opts
    return {"args": args, "config_file": config_file, "overrides": overrides, "opts": opts,
            "train_net_argv": train_net_argv, "num_videos": num_videos}


def evaluate_untrained(args) -> dict:
    """Worker for models with nothing to train (the frequency baseline): setup, build, evaluate."""
    try:
        return evaluate_weights(setup(args))
    finally:
        release_output_dir_lock()


def cli(argv: Optional[List[str]] = None) -> int:
    """Translate, print the equivalent train_net command, run it; returns the exit code (user errors: one
    ``error:`` line and 2, from this process or its workers; see sgg.utils.errors)."""
    return run_cli(_cli, argv)


def _cli(argv: Optional[List[str]]) -> int:
    plan = translate(argv)
    args = plan["args"]
    command = "python tools/train_net.py " + " ".join(_quote(x) for x in plan["train_net_argv"])
    print(f"tools/train.py -> {command}", flush=True)
    if is_easg(args):
        print(f"tools/train.py: EASG run ({EASG_MODELS[args.model.lower()]}, {args.mode}, config "
              f"{plan['config_file']})" + (f"; -resume_from {args.resume_from}: the weights that fit are loaded, the "
                                          "rest (class heads, other widths) is reported and initialised fresh"
                                          if args.resume_from and not args.eval_only else ""), flush=True)
    if plan["num_videos"] is not None:
        print(f"tools/train.py: {plan['num_videos']} training {'graphs' if is_easg(args) else 'videos'} per epoch",
              flush=True)
    if args.print_config:
        cfg = load_config(plan["config_file"], plan["overrides"], plan["opts"])
        print(cfg.dump())
        return 0
    train_net_args = default_argument_parser().parse_args(plan["train_net_argv"])
    worker = evaluate_untrained if args.model.lower() == "frequency_baseline" else default_main
    return launch_cli(worker, train_net_args)


def _format_value(value) -> str:
    """A config value as train_net's KEY VALUE text (tuples in Python syntax with double-quoted strings)."""
    if isinstance(value, (tuple, list)):
        items = [f'"{v}"' if isinstance(v, str) else str(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return str(value)


def _quote(text: str) -> str:
    return shlex.quote(text)


if __name__ == "__main__":
    sys.exit(cli())
