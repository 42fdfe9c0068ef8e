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

Epochs are converted to iterations (optimizer steps): ``MAX_ITER = ceil(epochs x videos / (batch_size x
accumulate_grad_batches x num_gpus))`` with ``videos`` = the training set size after the loader's filters.
``-data_path demo`` selects the procedural Action Genome twin (``demo_ag_*``) and the small demo configs.
Trailing ``KEY VALUE`` pairs are passed on as config overrides.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
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
    "scenellm": "scenellm",
}
UNBUILT_MODELS = {
    "oed": "OED",
}
# Flags of the seed's docs that only configure models sgg does not implement yet.
UNBUILT_FLAGS: Dict[str, str] = {}
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
    a("-mode", default="predcls", choices=MODES, help="predcls, sgcls or sgdet (TEST.RELATION.MODE)")
    a("-model", default="sttran", help=f"one of {', '.join(MODELS)}")
    a("-data_path", default="", help="Action Genome root (DATASETS.AG.ROOT); 'demo' = the procedural demo twin")
    a("-datasize", default="large", choices=("small", "mini", "large"),
      help="small/mini = STTran's first 80 000 person-box keys (DATASETS.AG.DATASIZE mini)")
    a("-config", default="", help="base config file (default: configs/action_genome/sttran_<mode>.yaml, or the "
                                  "quick demo config with -data_path demo)")
    a("-lr", type=float, help="SOLVER.BASE_LR")
    a("-batch_size", type=int, default=1, help="videos per step per process (SOLVER.IMS_PER_BATCH = batch_size x "
                                               "accumulate_grad_batches x num_gpus)")
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
    for flag, model in UNBUILT_FLAGS.items():
        a(f"-{flag}", help=f"{model} only (not implemented in sgg yet: fails)")
    add_local_rank_argument(p)  # python -m torch.distributed.launch passes --local-rank N
    a("opts", nargs=argparse.REMAINDER, help="trailing KEY VALUE config overrides")
    return p


def base_config(args) -> str:
    """The config file a run starts from."""
    if args.config:
        return args.config
    stem = CONFIG_STEMS.get(args.model.lower(), "sttran")
    if args.data_path == "demo":
        name = f"{stem}_demo.yaml" if args.mode == "predcls" else f"{stem}_{args.mode}_demo.yaml"
        return get_config_file(f"quick/{name}")
    return get_config_file(f"action_genome/{stem}_{args.mode}.yaml")


def check_flags(args) -> None:
    """Refuse models and flags sgg does not implement, naming what exists."""
    name = args.model.lower()
    if name in UNBUILT_MODELS:
        raise SeedFlagError(f"-model {args.model}: {UNBUILT_MODELS[name]} is not implemented in sgg yet. "
                            f"Available models: {', '.join(MODELS)}.")
    if name not in MODELS:
        raise SeedFlagError(f"-model {args.model}: unknown model. Available models: {', '.join(MODELS)} "
                            f"(planned: {', '.join(UNBUILT_MODELS)}).")
    for flag, model in UNBUILT_FLAGS.items():
        if getattr(args, flag) is not None:
            raise SeedFlagError(f"-{flag} configures {model}, which is not implemented in sgg yet; it would be "
                                f"ignored by -model {args.model}, so it is refused. Available models: "
                                f"{', '.join(MODELS)}.")
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
        if getattr(args, flag) < 1:
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


def static_overrides(args) -> List[Tuple[str, object]]:
    """(config key, value) pairs that follow from the flags alone (not from the dataset size)."""
    o: List[Tuple[str, object]] = [("TEST.RELATION.MODE", args.mode),
                                   ("MODEL.META_ARCHITECTURE", MODELS[args.model.lower()])]
    if args.data_path and args.data_path != "demo":
        o += [("DATASETS.AG.ROOT", args.data_path), ("DATASETS.TRAIN", ("ag_train",)),
              ("DATASETS.TEST", ("ag_test",))]
    o.append(("DATASETS.AG.DATASIZE", "large" if args.datasize == "large" else "mini"))
    o.append(("SOLVER.ACCUMULATE_GRAD_STEPS", args.accumulate_grad_batches))
    o.append(("SOLVER.IMS_PER_BATCH", args.batch_size * args.accumulate_grad_batches * num_processes(args)))
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
    if args.bce_loss:
        o.append(("MODEL.STTRAN.MULTI_LABEL_LOSS", "bce"))
    for flag, key in TEMPURA_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            o.append((key, "none" if value == "None" else value))
    if args.mlm:
        o.append(("MODEL.TEMPURA.MULTI_LABEL_LOSS", "margin"))
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
            o.append(("SOLVER.PLATEAU.METRIC", PLATEAU_METRIC))
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
    if plan["num_videos"] is not None:
        print(f"tools/train.py: {plan['num_videos']} training videos per epoch", flush=True)
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
