"""The whole default config tree. Every key a YAML file or a command-line override may set exists here.

Conventions: class indices are 0-based everywhere inside sgg (background / no-relation is handled by the models);
lengths are in pixels; LRs are absolute; iteration counts are optimizer steps.
Model- and dataset-specific sections are grouped below the general ones; add new keys next to their kin.
"""

from .config import CfgNode as CN

__all__ = ["_C"]

_C = CN()
_C.VERSION = 1

# ---------------------------------------------------------------------------- model
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = ""
_C.MODEL.DEVICE = "cuda"  # falls back to CPU (with a warning) when CUDA is absent
_C.MODEL.WEIGHTS = ""  # a local checkpoint path; nothing is ever downloaded
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]  # RGB, 0-255
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""
_C.MODEL.BACKBONE.FREEZE_AT = 2  # 0 = train everything; k = freeze the stem and the first k-1 stages
_C.MODEL.BACKBONE.WEIGHTS = ""  # local path to backbone weights (torchvision state dict)
_C.MODEL.BACKBONE.DEPTH = 50
_C.MODEL.BACKBONE.OUT_CHANNELS = 256  # for the small demo CNN
_C.MODEL.BACKBONE.NORM = "FrozenBN"

_C.MODEL.MATCHER = CN()
_C.MODEL.MATCHER.NAME = ""

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NUM_CLASSES = 150  # object classes (without background)
_C.MODEL.ROI_RELATION_HEAD = CN()
_C.MODEL.ROI_RELATION_HEAD.NUM_CLASSES = 50  # predicate classes (without no-relation)

# ---------------------------------------------------------------------------- input
_C.INPUT = CN()
_C.INPUT.FORMAT = "RGB"
_C.INPUT.MIN_SIZE_TRAIN = (800,)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"  # "choice" or "range"
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
_C.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal", "none"
_C.INPUT.CROP = CN()
_C.INPUT.CROP.ENABLED = False
_C.INPUT.CROP.TYPE = "absolute_range"
_C.INPUT.CROP.SIZE = [384, 600]
_C.INPUT.CROP.RESIZE_SHORTEST = [400, 500, 600]  # DETR-style resize before the crop
_C.INPUT.CROP.PROB = 0.5

# ---------------------------------------------------------------------------- datasets
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()
_C.DATASETS.TEST = ()
_C.DATASETS.TYPE = ""  # "" or "MULTI_DATASET" (seed 002's spelling; same as MULTI_DATASET.ENABLED)
_C.DATASETS.MULTI_DATASET = CN()
_C.DATASETS.MULTI_DATASET.ENABLED = False
_C.DATASETS.MULTI_DATASET.REAL_DATASETS = ("vg_train",)
_C.DATASETS.MULTI_DATASET.SYNTHETIC_DATASETS = ("synthetic_genome_train",)
_C.DATASETS.MULTI_DATASET.REAL_SAMPLING_RATIO = 0.7
_C.DATASETS.MULTI_DATASET.SYNTHETIC_SAMPLING_RATIO = 0.3
_C.DATASETS.MULTI_DATASET.REAL_LOSS_WEIGHT = 1.0
_C.DATASETS.MULTI_DATASET.SYNTHETIC_LOSS_WEIGHT = 0.5
# Visual Genome style filters (DESIGN.md §3)
_C.DATASETS.VG = CN()
_C.DATASETS.VG.ROOT = ""  # "" = $SGG_DATASETS/vg
_C.DATASETS.VG.FILTER_EMPTY_RELS = True
_C.DATASETS.VG.FILTER_NON_OVERLAP = False
_C.DATASETS.VG.FILTER_DUPLICATE_RELS = True
_C.DATASETS.VG.NUM_VAL_IMAGES = 5000
_C.DATASETS.VG.BOX_SCALE = 1024

# ---------------------------------------------------------------------------- data loader
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
_C.DATALOADER.SAMPLER_TEST = "InferenceSampler"
_C.DATALOADER.MAPPER = ""  # "" = the mapper named by the first train dataset's metadata
_C.DATALOADER.REPEAT_THRESHOLD = 0.0  # RepeatFactorTrainingSampler
_C.DATALOADER.ASPECT_RATIO_GROUPING = False
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

# ---------------------------------------------------------------------------- solver
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "AdamW"  # "AdamW" or "SGD"
_C.SOLVER.BASE_LR = 1e-4
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.BETAS = (0.9, 0.999)
_C.SOLVER.EPS = 1e-8
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.WEIGHT_DECAY_BIAS = None  # None = same as WEIGHT_DECAY
# Per-module LR multipliers: parameter-name prefix -> multiplier, e.g. [["backbone", 0.1]].
_C.SOLVER.LR_MULTIPLIERS = []
_C.SOLVER.BACKBONE_MULTIPLIER = 1.0  # shorthand for LR_MULTIPLIERS [["backbone", x]]
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # WarmupMultiStepLR, WarmupCosineLR, WarmupPlateau, Constant
_C.SOLVER.MAX_ITER = 1000
_C.SOLVER.STEPS = (700,)
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_ITERS = 0
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.BASE_LR_END = 0.0  # for cosine
_C.SOLVER.PLATEAU = CN()
_C.SOLVER.PLATEAU.METRIC = ""  # metric name reported by the evaluator, e.g. "sgg/R@20"
_C.SOLVER.PLATEAU.MODE = "max"
_C.SOLVER.PLATEAU.FACTOR = 0.5
_C.SOLVER.PLATEAU.PATIENCE = 1
_C.SOLVER.CHECKPOINT_PERIOD = 5000
_C.SOLVER.IMS_PER_BATCH = 16  # global batch over all workers
_C.SOLVER.ACCUMULATE_GRAD_STEPS = 1  # micro-batches per optimizer step
_C.SOLVER.MAX_NONFINITE_STEPS = 10  # consecutive non-finite losses before aborting
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"  # "full_model" or "value" or "norm"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # CUDA only; ignored (with a warning) on CPU
_C.SOLVER.AMP.DTYPE = "float16"  # "float16" or "bfloat16"
_C.SOLVER.EARLY_STOPPING = CN()
_C.SOLVER.EARLY_STOPPING.ENABLED = False
_C.SOLVER.EARLY_STOPPING.METRIC = ""
_C.SOLVER.EARLY_STOPPING.MODE = "max"
_C.SOLVER.EARLY_STOPPING.PATIENCE = 5  # evaluations without improvement
_C.SOLVER.EARLY_STOPPING.MIN_DELTA = 0.0
_C.SOLVER.BEST_CHECKPOINT = CN()
_C.SOLVER.BEST_CHECKPOINT.METRIC = ""  # e.g. "sgg/R@50"; "" = no best checkpoint
_C.SOLVER.BEST_CHECKPOINT.MODE = "max"
# Two-stage training (generic): at STAGE2.START_ITER unfreeze STAGE2.UNFREEZE (prefixes), multiply their LR.
_C.SOLVER.STAGE2 = CN()
_C.SOLVER.STAGE2.ENABLED = False
_C.SOLVER.STAGE2.START_ITER = 0
_C.SOLVER.STAGE2.UNFREEZE = []
_C.SOLVER.STAGE2.LR_FACTOR = 0.1

# ---------------------------------------------------------------------------- test
_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 0  # 0 = only at the end
_C.TEST.EVALUATORS = []  # names in EVALUATOR_REGISTRY; [] = the dataset metadata's evaluator_type
_C.TEST.EXPECTED_RESULTS = []  # [[task, metric, value, tolerance], ...]
_C.TEST.DETECTIONS_PER_IMAGE = 100
_C.TEST.RELATION = CN()
_C.TEST.RELATION.MODE = "sgdet"  # "predcls", "sgcls", "sgdet"
_C.TEST.RELATION.TOPK = 100  # relations kept per image
_C.TEST.RELATION.IOU_THRESHOLD = 0.5
_C.TEST.RELATION.ZEROSHOT_FILE = ""  # (T,3) [sub, obj, pred] 0-based; "" = none
_C.TEST.SAVE_PREDICTIONS = True  # write inference/<dataset>/predictions.pth

# ---------------------------------------------------------------------------- misc
_C.OUTPUT_DIR = "./output"
_C.SEED = -1  # < 0 = random, recorded in the log
_C.CUDNN_BENCHMARK = False
_C.DETERMINISTIC = False  # torch.use_deterministic_algorithms + fixed seeds; needed for bit-exact resume
_C.LOG_PERIOD = 20
_C.VIS_PERIOD = 0
