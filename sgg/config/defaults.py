"""The whole default config tree. Every key a YAML file or a command-line override may set exists here.

Conventions: class indices are 0-based everywhere inside sgg (background / no-relation is handled by the models);
lengths are in pixels; LRs are absolute; iteration counts are optimizer steps.
Model- and dataset-specific sections are grouped below the general ones; add new keys next to their kin.
"""

from .config import CfgNode as CN

__all__ = ["_C", "get_cfg"]

_C = CN()
_C.VERSION = 1

# ---------------------------------------------------------------------------- model
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = ""
_C.MODEL.DEVICE = "auto"  # auto = CUDA when available, else CPU; an explicit "cuda" without CUDA is an error
_C.MODEL.WEIGHTS = ""  # a local checkpoint path; nothing is ever downloaded
# MODEL.WEIGHTS must fill every model tensor with the right shape (else an error listing the mismatches); True loads
# the matching tensors only and logs the rest (progressive training sets it). A checkpoint matching nothing is an error.
_C.MODEL.ALLOW_PARTIAL_WEIGHTS = False
# "" = float model; "dynamic" = nn.Linear layers int8 dynamically quantized (torch.ao, CPU only) when the model is
# built, before MODEL.WEIGHTS loads: what tools/export_model.py --quantize dynamic writes (and records here) so that
# --eval-only rebuilds the quantized structure its checkpoint needs (sgg/modeling/quantization.py, docs/deploy.md).
_C.MODEL.QUANTIZATION = ""
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]  # RGB, 0-255
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""
_C.MODEL.BACKBONE.FREEZE_AT = 2  # 0 = train everything; k = freeze the stem and the first k-1 stages
_C.MODEL.BACKBONE.WEIGHTS = ""  # local path to backbone weights (torchvision state dict)
_C.MODEL.BACKBONE.DEPTH = 50
_C.MODEL.BACKBONE.OUT_CHANNELS = 256  # for the small demo CNN
_C.MODEL.BACKBONE.SMALL_CNN_STRIDE = 16  # SmallCNN output stride: 8 or 16
_C.MODEL.BACKBONE.NORM = "FrozenBN"
# NAME "D2Backbone": any backbone of detectron2's BACKBONE_REGISTRY (needs detectron2; docs/detectron2.md). DEPTH,
# FREEZE_AT, NORM map to MODEL.RESNETS.DEPTH, MODEL.BACKBONE.FREEZE_AT, MODEL.RESNETS.NORM; CONFIG_FILE (a detectron2
# YAML, "detectron2://COCO-Detection/..." = one of its model-zoo configs) overrides them; detectron2 keys written
# inline here (MODEL.BACKBONE.D2.MODEL.RESNETS.DEPTH, ...) override both and are checked against detectron2's own.
# WEIGHTS then is a detectron2 checkpoint (.pkl / .pth, local), read by detectron2's DetectionCheckpointer.
_C.MODEL.BACKBONE.D2 = CN(new_allowed=True)
_C.MODEL.BACKBONE.D2.CONFIG_FILE = ""
_C.MODEL.BACKBONE.D2.OUT_FEATURE = ""  # the output feature sgg uses ("res5", "p3", ...; "" = the coarsest)

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
_C.INPUT.VIDEO_FPS = 2.0  # frames per second sgg.engine.Predictor samples from a video file for a video SGG model
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
# ---- image SGG data (sgg/data/datasets/visual_genome.py)
_C.DATASETS.SYNTHETIC_GENOME = CN()
_C.DATASETS.SYNTHETIC_GENOME.ROOT = ""  # "" = $SGG_DATASETS/synthetic_genome (same layout as VG150)

# ---------------------------------------------------------------------------- data loader
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
_C.DATALOADER.SAMPLER_TEST = "InferenceSampler"
_C.DATALOADER.MAPPER = ""  # "" = the mapper named by the first train dataset's metadata
_C.DATALOADER.REPEAT_THRESHOLD = 0.0  # RepeatFactorTrainingSampler
_C.DATALOADER.ASPECT_RATIO_GROUPING = False
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
# Curriculum learning (sgg/data/samplers/curriculum.py, docs/tuning.md): easiest samples first, then more, then all.
# Composes with DATASETS.MULTI_DATASET (each source's easiest part; exact ratios kept) and resumes exactly.
_C.DATALOADER.CURRICULUM = CN()
_C.DATALOADER.CURRICULUM.ENABLED = False
# Per-sample difficulty (higher = harder): num_relations | num_objects (videos: summed over frames) | box_size
# (smaller boxes relative to the image are harder) | file (DIFFICULTY_FILE: JSON {"<dataset>/<id>" or "<id>": value},
# e.g. per-sample losses of an earlier run).
_C.DATALOADER.CURRICULUM.DIFFICULTY = "num_relations"
_C.DATALOADER.CURRICULUM.DIFFICULTY_FILE = ""
_C.DATALOADER.CURRICULUM.UNIT = "epoch"  # STAGES in "epoch" (SOLVER.ITERS_PER_EPOCH, else N / IMS_PER_BATCH) or "iter"
# Stage boundaries: before STAGES[0] the easiest FRACTIONS[0] of the samples, ..., from STAGES[-1] on all of them
# (seed 001's example: 20 epochs easy, until epoch 60 medium, then the full dataset).
_C.DATALOADER.CURRICULUM.STAGES = (20, 60)
_C.DATALOADER.CURRICULUM.FRACTIONS = (0.33, 0.67)

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
# Iterations per epoch when a run was specified in epochs (tools/train.py -epochs sets it): log lines then show the
# epoch. 0 = iterations only. Informational: it changes no schedule.
_C.SOLVER.ITERS_PER_EPOCH = 0
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
_C.SOLVER.FIND_UNUSED_PARAMETERS = False  # DDP: set True for models with parameters unused in some steps
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
# More metrics, each with its own model_best_<metric>.pth (same MODE), e.g. ("video_sgg/with/R@20",) beside mR@20
_C.SOLVER.BEST_CHECKPOINT.EXTRA_METRICS = ()
# Two-stage training (generic): at STAGE2.START_ITER unfreeze STAGE2.UNFREEZE (prefixes), multiply their LR.
_C.SOLVER.STAGE2 = CN()
_C.SOLVER.STAGE2.ENABLED = False
_C.SOLVER.STAGE2.START_ITER = 0
_C.SOLVER.STAGE2.UNFREEZE = []  # prefixes, or fnmatch patterns on the full name when they hold * ? [ ("llm.*lora_*")
_C.SOLVER.STAGE2.LR_FACTOR = 0.1

# ---------------------------------------------------------------------------- test
_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 0  # 0 = only at the end
_C.TEST.EVALUATORS = []  # names in EVALUATOR_REGISTRY; [] = the dataset metadata's evaluator_type
_C.TEST.EXPECTED_RESULTS = []  # [[task, metric, value, tolerance], ...]
_C.TEST.DETECTIONS_PER_IMAGE = 100
_C.TEST.IMS_PER_BATCH = 1  # per worker
_C.TEST.RELATION = CN()
_C.TEST.RELATION.MODE = "sgdet"  # "predcls", "sgcls", "sgdet"
_C.TEST.RELATION.TOPK = 100  # relations kept per image
_C.TEST.RELATION.IOU_THRESHOLD = 0.5
_C.TEST.RELATION.ZEROSHOT_FILE = ""  # (T,3) [sub, obj, pred] 0-based; "" = none
_C.TEST.SAVE_PREDICTIONS = True  # write inference/<dataset>/predictions.pth
# --- image scene-graph evaluation (sgg/evaluation/scene_graph.py, docs/evaluation.md)
_C.TEST.RELATION.RECALL_KS = (20, 50, 100)  # the K of R@K, ngR@K, mR@K, zR@K, A@K
_C.TEST.RELATION.BOX_AP = True  # also report pycocotools box AP ("bbox" task) in sgcls / sgdet

# ---------------------------------------------------------------------------- misc
# Python modules imported (in every worker) before anything is built, so that user code can register its own
# models, datasets, evaluators ... (like mmdetection's custom_imports). E.g. ["my_project.modeling"].
_C.IMPORTS = []
_C.OUTPUT_DIR = "./output"
_C.SEED = -1  # < 0 = random, recorded in the log
_C.CUDNN_BENCHMARK = False
_C.DETERMINISTIC = False  # torch.use_deterministic_algorithms + fixed seeds; needed for bit-exact resume
_C.LOG_PERIOD = 20
# Every VIS_PERIOD iterations (0 = never), the predictions on the first VIS_SAMPLES test inputs are drawn into
# TensorBoard (images "vis/<dataset>/<i>"; image and video SGG models; docs/engine.md, "Monitoring").
_C.VIS_PERIOD = 0
_C.VIS_SAMPLES = 2
# TensorBoard extras (scalars, incl. grad_norm, are always written). Every HISTOGRAM_PERIOD iterations: a histogram of
# each trainable weight (weights/<name>) and, with HISTOGRAM_GRADIENTS, of its gradient before clipping (grads/<name>);
# 0 = off (a histogram of every tensor costs time and event-file space).
_C.TENSORBOARD = CN()
_C.TENSORBOARD.HISTOGRAM_PERIOD = 0
_C.TENSORBOARD.HISTOGRAM_BINS = 64
_C.TENSORBOARD.HISTOGRAM_GRADIENTS = False

# ---------------------------------------------------------------------------- text-to-video (seed 004)
# ModelScope-style latent video diffusion: UNet3DConditionModel + AutoencoderKL + CLIP text encoder (diffusers).
# The defaults are ModelScope's architecture; configs/quick/t2v_demo.yaml shrinks everything for CPU.
_C.MODEL.T2V = CN()
# Local diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/). When set, every part
# and the noise schedule come from it; "" = build random parts from the keys below. Nothing is ever downloaded.
_C.MODEL.T2V.PRETRAINED_DIR = ""
_C.MODEL.T2V.GRADIENT_CHECKPOINTING = False  # recompute the 3D UNet's down/mid/up blocks in backward (saves memory)
_C.MODEL.T2V.CAPTION_DROPOUT = 0.0  # probability of training on the empty prompt (what classifier-free guidance needs)
# Train on VAE posterior samples (diffusers' scripts) or on the posterior mean; a pretrained VAE's posterior is so
# narrow that both agree, a random VAE's (std ~1) would drown the signal, hence False in the demo.
_C.MODEL.T2V.SAMPLE_POSTERIOR = True
# DefaultTrainer adds sgg.engine.hooks.DiffusersExportHook: with every checkpoint and at the end also write the model
# as a diffusers folder under OUTPUT_DIR/diffusers/ (model.save_pretrained; EMA UNet weights when MODEL.EMA is on).
# Off by default because only diffusers-backed models (TextToVideoDiffusion) can be exported; the t2v configs set it.
_C.MODEL.T2V.EXPORT_DIFFUSERS = False
_C.MODEL.T2V.UNET = CN()
_C.MODEL.T2V.UNET.BLOCK_OUT_CHANNELS = (320, 640, 1280, 1280)
_C.MODEL.T2V.UNET.LAYERS_PER_BLOCK = 2
_C.MODEL.T2V.UNET.DOWN_BLOCK_TYPES = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D",
                                      "DownBlock3D")
_C.MODEL.T2V.UNET.UP_BLOCK_TYPES = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D")
_C.MODEL.T2V.UNET.ATTENTION_HEAD_DIM = 64
_C.MODEL.T2V.UNET.NORM_NUM_GROUPS = 32
_C.MODEL.T2V.VAE = CN()
_C.MODEL.T2V.VAE.BLOCK_OUT_CHANNELS = (128, 256, 512, 512)
_C.MODEL.T2V.VAE.LAYERS_PER_BLOCK = 2
_C.MODEL.T2V.VAE.LATENT_CHANNELS = 4
_C.MODEL.T2V.VAE.NORM_NUM_GROUPS = 32
_C.MODEL.T2V.VAE.SCALING_FACTOR = 0.18215  # latents are multiplied by this before diffusion (Stable Diffusion's VAE)
_C.MODEL.T2V.TEXT = CN()
_C.MODEL.T2V.TEXT.HIDDEN_SIZE = 1024  # = the UNet's cross_attention_dim
_C.MODEL.T2V.TEXT.NUM_LAYERS = 23
_C.MODEL.T2V.TEXT.NUM_HEADS = 16
_C.MODEL.T2V.TEXT.INTERMEDIATE_SIZE = 4096
_C.MODEL.T2V.TEXT.MAX_LENGTH = 77  # CLIP's context length
_C.MODEL.T2V.TEXT.TOKENIZER_DIR = ""  # local CLIPTokenizer folder; "" = sgg's offline word-level demo tokenizer
_C.MODEL.T2V.SCHEDULER = CN()  # DDPM training schedule; ignored when PRETRAINED_DIR has scheduler/
_C.MODEL.T2V.SCHEDULER.NUM_TRAIN_TIMESTEPS = 1000
_C.MODEL.T2V.SCHEDULER.BETA_SCHEDULE = "scaled_linear"
# Seed 004's 1e-4..0.02 suits training from scratch only; the pretrained ModelScope schedule is 0.00085..0.012.
_C.MODEL.T2V.SCHEDULER.BETA_START = 0.0001
_C.MODEL.T2V.SCHEDULER.BETA_END = 0.02
_C.MODEL.T2V.SCHEDULER.PREDICTION_TYPE = "epsilon"
_C.MODEL.EMA = CN()  # exponential moving average of weights (sgg.engine.ema.EMAHook)
_C.MODEL.EMA.ENABLED = False
_C.MODEL.EMA.DECAY = 0.9999
_C.MODEL.EMA.PREFIX = ""  # average parameters whose name starts with this, e.g. "unet."; "" = all trainable ones
_C.MODEL.EMA.WARMUP = True  # decay = min(DECAY, (1 + n) / (10 + n)) after n updates, so early averages move
_C.INPUT.T2V = CN()  # clip sampling and augmentation (sgg.data.t2v_mapper.TextToVideoMapper)
_C.INPUT.T2V.NUM_FRAMES = 16  # clips are trimmed / padded (last frame repeated) to this many frames
_C.INPUT.T2V.FPS = 8.0  # decoding rate
_C.INPUT.T2V.SIZE = (256, 256)  # (height, width): shorter side resized, then centre crop
_C.INPUT.T2V.RANDOM_FLIP = True  # horizontal flip (train); "left"/"right" in the caption are swapped with it
_C.INPUT.T2V.COLOR_JITTER = 0.1  # max relative brightness / contrast / saturation change (train); 0 = off
_C.INPUT.T2V.TEMPORAL_CROP = True  # random start of the N-frame window (train); evaluation uses the centre window
_C.TEST.T2V = CN()  # sampling and metrics (sgg.evaluation.video_generation)
_C.TEST.T2V.GENERATE = True  # sample a clip per validation caption (False = validation loss only)
_C.TEST.T2V.NUM_INFERENCE_STEPS = 50  # DDIM steps
_C.TEST.T2V.GUIDANCE_SCALE = 9.0  # classifier-free guidance; 1.0 = off
_C.TEST.T2V.ETA = 0.0  # DDIM eta
_C.TEST.T2V.SEED = 0  # noise for sampling and for the validation loss is drawn from generators seeded by this
_C.TEST.T2V.VAL_LOSS_TIMESTEPS = 10  # validation loss averaged over this many evenly spaced timesteps
_C.TEST.T2V.NUM_SAMPLES_TO_SAVE = 4  # contact sheets + GIFs of the first K generated clips under inference/
_C.TEST.T2V.FVD_I3D_PATH = ""  # local TorchScript I3D (StyleGAN-V's i3d_torchscript.pt); "" = FVD not computed
_C.TEST.T2V.CLIP_MODEL_DIR = ""  # local transformers CLIPModel folder; "" = CLIP score not computed

# ---------------------------------------------------------------------------- keyframe detection (seed 003, TVSum)
# Model: EfficientNet-B0 (or h5 features) -> Linear -> sinusoidal PE -> TransformerEncoder -> local + global attention
# -> fusion -> MLP -> sigmoid score per sampled frame ("step"). See docs/keyframes.md.
_C.MODEL.KEYFRAME = CN()
_C.MODEL.KEYFRAME.FEATURE_DIM = 1024  # input width of the feature variant (eccv16 h5 GoogLeNet pool5 = 1024)
_C.MODEL.KEYFRAME.D_MODEL = 512
_C.MODEL.KEYFRAME.NUM_LAYERS = 3
_C.MODEL.KEYFRAME.NUM_HEADS = 8
_C.MODEL.KEYFRAME.DIM_FEEDFORWARD = 2048
_C.MODEL.KEYFRAME.DROPOUT = 0.1
_C.MODEL.KEYFRAME.LOCAL_WINDOW = 5  # local attention sees steps i-5..i+5
_C.MODEL.KEYFRAME.SCORER_HIDDEN = 256
_C.MODEL.KEYFRAME.FREEZE_BACKBONE = True  # stage 1; SOLVER.STAGE2 unfreezes the last blocks
_C.MODEL.KEYFRAME.BACKBONE_NORM_EVAL = True  # keep backbone BatchNorm statistics fixed (small batches of frames)
_C.MODEL.KEYFRAME.BACKBONE_CHUNK = 64  # frames per backbone forward in eval mode (bounds memory on long videos)
_C.MODEL.KEYFRAME.RANKING_LOSS = "soft_spearman"  # name in RANKING_LOSS_REGISTRY: soft_spearman, pairwise_margin
_C.MODEL.KEYFRAME.RANKING_LOSS_WEIGHT = 1.0
_C.MODEL.KEYFRAME.MSE_LOSS_WEIGHT = 1.0
_C.MODEL.KEYFRAME.SOFT_RANK_TEMPERATURE = 0.05  # soft_spearman: width of the sigmoid pairwise comparison
_C.MODEL.KEYFRAME.RANKING_MARGIN = 0.05  # pairwise_margin: required score gap for ordered pairs
_C.MODEL.EFFICIENTNET = CN()
_C.MODEL.EFFICIENTNET.WIDTH_MULT = 1.0  # 1.0 / 1.0 = EfficientNet-B0 (loads torchvision weights)
_C.MODEL.EFFICIENTNET.DEPTH_MULT = 1.0
_C.MODEL.EFFICIENTNET.STOCHASTIC_DEPTH_PROB = 0.2
_C.INPUT.KEYFRAME = CN()
_C.INPUT.KEYFRAME.FPS = 2.0  # frames sampled per second from raw videos
_C.INPUT.KEYFRAME.SIZE = 224  # frames resized to SIZE x SIZE
_C.INPUT.KEYFRAME.TRAIN_CLIP_STEPS = 60  # training: random window of this many steps (0 = whole video)
_C.INPUT.KEYFRAME.KTS_VMAX = 1.0  # raw videos: KTS penalty weight for shot boundaries (Potapov et al. 2014)
_C.TEST.KEYFRAME = CN()
_C.TEST.KEYFRAME.SUMMARY_RATIO = 0.15  # knapsack capacity = floor(ratio * n_frames)
_C.TEST.KEYFRAME.F1_REDUCTION = ""  # "" = dataset metadata (TVSum "avg" over users, SumMe "max")
# Which reference each number follows (sgg/evaluation/keyframe.py, docs/keyframes.md); metric keys carry the name,
# e.g. keyframe/F1[vsumm], keyframe/tau[otani].
_C.TEST.KEYFRAME.F1_PROTOCOL = "vsumm"  # vsumm (pytorch-vsumm-reinforce) | dsnet (DSNet) | pglsum (PGL-SUM / CA-SUM)
_C.TEST.KEYFRAME.CORRELATION_PROTOCOL = "otani"  # otani (frame level, per annotator) | casum (CA-SUM, step level)
_C.TEST.KEYFRAME.RANDOM_BASELINE_TRIALS = 0  # > 0: also report uniform random scores under the same protocol

# ------------------------------------------------------------------------ Action Genome data + video SGG eval
# Loader options of ag_* / demo_ag_* (sgg/data/datasets/action_genome.py, docs/action_genome.md).
_C.DATASETS.AG = CN()
_C.DATASETS.AG.ROOT = ""  # "" = $SGG_DATASETS/action_genome (demo_ag_* always use $SGG_DATASETS/demo/action_genome)
_C.DATASETS.AG.DATASIZE = "large"  # "large" = everything; "mini" = STTran's first MINI_NUM_FRAMES person-box keys
_C.DATASETS.AG.MINI_NUM_FRAMES = 80000
# STTran drops object boxes with a short edge < SMALL_BOX_MIN_EDGE px for SGCls/SGDet: "auto" follows
# TEST.RELATION.MODE (off for predcls, on for sgcls/sgdet); "on" / "off" force it.
_C.DATASETS.AG.FILTER_SMALL_BOX = "auto"
_C.DATASETS.AG.SMALL_BOX_MIN_EDGE = 16.0
# EASG (sgg/data/datasets/easg.py, docs/easg.md): the folder with objects.txt, relationships.txt, verbs.txt and
# easg_{train,val}.pkl ("" = $SGG_DATASETS/easg; demo_easg_* always use $SGG_DATASETS/demo/easg).
_C.DATASETS.EASG = CN()
_C.DATASETS.EASG.ROOT = ""
_C.DATASETS.EASG.FEATURES_DIR = ""  # where verb_features.pt / roi_feats_{split}.pkl are ("" = ROOT)
_C.DATASETS.EASG.FEATURES = "auto"  # auto = read the feature files when present; on = required; off = never
# EASG graph-level recall (sgg/evaluation/easg_graph.py, evaluator "easg_graph"): mode = TEST.RELATION.MODE (edgecls /
# sgcls / easgcls); MODES: further modes scored from the same predictions (keys easg/<mode>/with/R@K).
_C.TEST.EASG = CN()
_C.TEST.EASG.MODES = ()
_C.TEST.EASG.KS = (10, 20, 50)
# EASGMapper: decode the graph's PRE / PNR / POST jpg frames (models reading pixels); False for feature-only models.
_C.INPUT.EASG = CN()
_C.INPUT.EASG.LOAD_FRAMES = True
# Video SGG protocol (STTran evaluation_recall.py + TEMPURA mR; sgg/evaluation/video_scene_graph.py). IoU threshold:
# TEST.RELATION.IOU_THRESHOLD. Metrics are reported as video_sgg/{constraint}/R@K and .../mR@K, in percent.
_C.TEST.VIDEO_RELATION = CN()
_C.TEST.VIDEO_RELATION.CONSTRAINTS = ("with", "semi", "no")
_C.TEST.VIDEO_RELATION.SEMI_THRESHOLD = 0.9  # semi constraint: spatial / contacting predicates with p > this
_C.TEST.VIDEO_RELATION.KS = (10, 20, 50)
# Extra prediction branches to evaluate (each frame then carries "<branch>/attention" etc.); reported as
# video_sgg/<branch>/<constraint>/R@K besides the plain keys. STKET: ("spatial", "temporal", "ensemble").
_C.TEST.VIDEO_RELATION.BRANCHES = ()
# mR@K: "tempura" = per-predicate hits / counts summed over all frames (TEMPURA; STKET's avgR); "stket" = STKET's
# per-frame per-predicate recall (0 where absent) averaged over frames, with the aggregate reported as avgR@K.
_C.TEST.VIDEO_RELATION.MR_VARIANT = "tempura"
# Protocols to report: "sttran" (STTran's evaluation_recall.py: the keys above, unlabelled) and/or "oed" (OED's
# evaluator: IoU without the +1-pixel convention, no semi constraint, SGDet triplet NMS; keys labelled
# video_sgg/with[oed]/R@20, video_sgg/no[oed]/mR@50, ...). See docs/evaluation.md.
_C.TEST.VIDEO_RELATION.PROTOCOLS = ("sttran",)
# OED protocol's triplet NMS (same subject class / predicate / object class, IoU_sub x IoU_obj > 0.9 suppressed; its
# no-constraint list is then the best 500 instead of 100): "auto" = SGDet only (OED's scripts), "on", "off".
_C.TEST.VIDEO_RELATION.OED_TRIPLET_NMS = "auto"

# ---------------------------------------------------------------------------- SpeaQ / IterativeSG (seed 002)
# One-stage SGDet transformer (sgg/modeling/meta_arch/speaq.py, docs/speaq.md). Defaults = IterativeSG (SpeaQ's parts
# off); configs/Base-SpeaQ.yaml turns them on. Boxes are normalised cxcywh; class heads add one background column.
_C.MODEL.DETR = CN()
_C.MODEL.DETR.NUM_QUERIES = 300  # subject/object queries; relation queries = NUM_QUERIES * MULTIPLY_QUERY
_C.MODEL.DETR.HIDDEN_DIM = 256
_C.MODEL.DETR.NHEADS = 8
_C.MODEL.DETR.DIM_FEEDFORWARD = 2048
_C.MODEL.DETR.ENC_LAYERS = 6
_C.MODEL.DETR.DEC_LAYERS = 6  # per decoder (subject, object, relation)
_C.MODEL.DETR.DROPOUT = 0.1
_C.MODEL.DETR.DEEP_SUPERVISION = True  # losses on every decoder layer (auxiliary losses)
_C.MODEL.DETR.COST_CLASS = 1.0  # matching cost weights (summed over subject, object and relation streams)
_C.MODEL.DETR.COST_BBOX = 5.0
_C.MODEL.DETR.COST_GIOU = 2.0
_C.MODEL.DETR.CLASS_WEIGHT = 1.0  # loss coefficients, per stream and per layer
_C.MODEL.DETR.L1_WEIGHT = 5.0
_C.MODEL.DETR.GIOU_WEIGHT = 2.0
_C.MODEL.DETR.NO_OBJECT_WEIGHT = 0.1  # CE weight of the background class of the subject/object heads
_C.MODEL.DETR.NO_RELATION_WEIGHT = 0.1  # CE weight of the no-relation class of the predicate head
# Not upstream (0 = off, as in every full-size config): weight of a dense entity-class loss on the encoder output (each
# feature cell -> class of the smallest GT box covering its centre, else background). A from-scratch demo backbone
# has no pretrained features; this gives the memory class-discriminative features early. Discarded at inference.
_C.MODEL.DETR.ENCODER_AUX_CLASS_WEIGHT = 0.0
# SpeaQ / IterativeSG: a local checkpoint of sgg's DETR detector (META_ARCHITECTURE "DETR") to start from, its
# decoder replicated into the subject, object and relation decoders (upstream starts from a DETR trained on VG). "" =
# random init. Applied when the model is built; MODEL.WEIGHTS / --resume load afterwards and take precedence.
_C.MODEL.DETR.DETECTOR_WEIGHTS = ""
# Relation CE class weights w_c = max(sqrt(OVERSAMPLE_PARAM / f_c), 1) ** UNDERSAMPLE_PARAM, f_c = predicate share in
# the training set (dataset metadata); OVERSAMPLE_PARAM <= 0 = uniform weights.
_C.MODEL.DETR.OVERSAMPLE_PARAM = 0.07
_C.MODEL.DETR.UNDERSAMPLE_PARAM = 0.75
_C.MODEL.DETR.MATCH_INDEPENDENT = True  # match every decoder layer on its own (False: one match from summed costs)
# SpeaQ (MODEL.MATCHER.NAME "SpeaQMatcher"): groupwise query specialization + quality-aware multi-assignment.
_C.MODEL.DETR.NUM_GROUPS = 1  # predicate frequency groups (from the training set's predicate_frequencies)
_C.MODEL.DETR.MULTIPLY_QUERY = 1  # relation queries per subject/object query
_C.MODEL.DETR.USE_GROUP_MASK = False  # a relation query may only match GT of its own predicate group
_C.MODEL.DETR.ONE2MANY_SCHEME = "none"  # "none", "static" (k copies of each GT), "dynamic" (quality-aware k)
_C.MODEL.DETR.ONE2MANY_K = 4  # static: copies; dynamic: top-k qualities summed
_C.MODEL.DETR.ONE2MANY_QUALITY = "max"  # dynamic quality of a query: max / min / am / gm of (IoU_sub, IoU_obj)
_C.MODEL.DETR.NMS_THRESH = 0.5  # inference: class-wise NMS IoU over the 2Q entity boxes (duplicates are snapped)
# SpeaQ / IterativeSG inference: "sgg" snaps a duplicate entity to the box that suppressed it, scores triplets with the
# kept boxes' scores and drops self-pairs; "upstream" is the released code's rule (snap to the most-overlapping kept
# box, the queries' own scores, self-pairs kept): configs/*_released.yaml, docs/checkpoints.md.
_C.MODEL.DETR.TRIPLET_RULE = "sgg"
# Feature-grid padding mask of the DETR-style models: "interpolate" (DETR's code: the pixel mask resampled) or "ceil"
# (detectron2's DETR wrapper, which IterativeSG / SpeaQ use: ceil(h / stride) rows are image). Equal for batches of
# one image or of equal sizes.
_C.MODEL.DETR.PADDING_MASK = "interpolate"

# ------------------------------------------------------------------------ STTran + SGDet detector (seed 000)
# EASG models (easg_linear.py, sttran_easg.py, easg_frequency.py; docs/easg.md). Class counts = the lines of
# objects.txt / relationships.txt / verbs.txt (EASG: 391 / 13 / 198). STTran-EASG takes its widths (VISUAL_DIM,
# EMBED_DIM, layers, heads, loss, object classifier) from MODEL.STTRAN.*; relation vector = 2 x VISUAL_DIM +
# 2 x EMBED_DIM.
_C.MODEL.EASG = CN()
_C.MODEL.EASG.NUM_OBJECTS = 391
_C.MODEL.EASG.NUM_RELATIONS = 13
_C.MODEL.EASG.NUM_VERBS = 198
_C.MODEL.EASG.VERB_FEATURE_DIM = 2304  # verb_features.pt (SlowFast 8x8 R101)
_C.MODEL.EASG.ROI_FEATURE_DIM = 1024  # roi_feats_{split}.pkl (Faster R-CNN box head)
_C.MODEL.EASG.OBJECT_FEATURES = "frames"  # STTran-EASG object features: "frames" (feature source on the jpgs) or "roi"
_C.MODEL.EASG.VERB_CLASSIFIER_HIDDEN = 1024  # STTran-EASG easgcls verb MLP (upstream: 2304 -> 1024 -> 198)
_C.MODEL.EASG.FREQUENCY_SMOOTHING = 1e-3  # EASGFrequencyBaseline: added to every count

# sgg/modeling/meta_arch/sttran.py, docs/sttran.md. Mode = TEST.RELATION.MODE (predcls / sgcls / sgdet).
_C.MODEL.STTRAN = CN()
_C.MODEL.STTRAN.NUM_CLASSES = 36  # object classes incl. the person (= 0), Action Genome
_C.MODEL.STTRAN.PREDICATE_GROUPS = (3, 6, 17)  # attention, spatial, contacting
_C.MODEL.STTRAN.POOLER_RESOLUTION = 7  # RoIAlign output (object and union boxes)
_C.MODEL.STTRAN.OBJ_FEATURE_DIM = 2048  # per-box feature after the RoI head
_C.MODEL.STTRAN.UNION_DIM = 256  # union-box map channels (conv1x1 of RoI features + box-mask conv)
_C.MODEL.STTRAN.VISUAL_DIM = 512  # subject / object / union projections (seed flag -hidden_dim)
_C.MODEL.STTRAN.EMBED_DIM = 200  # class word embeddings; relation dim = 3 x VISUAL_DIM + 2 x EMBED_DIM (1936)
_C.MODEL.STTRAN.WORD_VECTORS = ""  # local GloVe text file (glove.6B.200d.txt); "" = learned embeddings
_C.MODEL.STTRAN.ENC_LAYERS = 1  # spatial encoder (seed flag -spatial_layer)
_C.MODEL.STTRAN.DEC_LAYERS = 3  # temporal decoder (seed flag -temporal_layer)
_C.MODEL.STTRAN.NUM_HEADS = 8
_C.MODEL.STTRAN.DIM_FEEDFORWARD = 2048
_C.MODEL.STTRAN.DROPOUT = 0.1
_C.MODEL.STTRAN.TEMPORAL_WINDOW = 2  # frames per sliding window of the temporal decoder (seed flag -temporal_window)
_C.MODEL.STTRAN.MASK_SIZE = 27  # box-mask raster of a pair inside its union box
_C.MODEL.STTRAN.MULTI_LABEL_LOSS = "margin"  # spatial / contacting: "margin" (STTran default) or "bce" (-bce_loss)
_C.MODEL.STTRAN.OBJ_CLASSIFIER_HIDDEN = 1024  # SGCls / SGDet object classifier MLP
_C.MODEL.STTRAN.POS_DIM = 128  # box-position embedding of the object classifier
_C.MODEL.STTRAN.OBJECT_LOSS_WEIGHT = 1.0
_C.MODEL.STTRAN.FREEZE_BACKBONE = True  # STTran keeps its (AG-trained) detector backbone fixed
_C.MODEL.STTRAN.FRAME_CHUNK = 10  # frames per backbone forward
# Reference conventions (yrcong/STTran), needed for its released checkpoints (configs/action_genome/sttran_*.yaml);
# sgg's defaults are kept for the demos.
_C.MODEL.STTRAN.BOX_MASK_RULE = "exact"  # box masks: "exact" area, or "sttran" (draw_union_boxes' per-axis product)
_C.MODEL.STTRAN.OBJ_BOX_POSITION = "normalized"  # object-classifier box input: "normalized" or "pixels" (center_size)
_C.MODEL.STTRAN.SGDET_LABELS = "classifier"  # SGDet eval labels: object "classifier" or "detector" (the reference)
_C.MODEL.STTRAN.SGCLS_DEDUP = False  # SGCls eval: the reference's duplicate-class suppression per frame
# SGDet training boxes: "gt" (sgg's default: the GT boxes) or "detections" (the reference: each GT box's assigned
# detection, IoU > SGDET_ASSIGN_IOU; GT boxes no detection found are supplied when SGDET_SUPPLY, upstream's use_SUPPLY).
_C.MODEL.STTRAN.SGDET_TRAIN_BOXES = "gt"
_C.MODEL.STTRAN.SGDET_SUPPLY = True
_C.MODEL.STTRAN.SGDET_ASSIGN_IOU = 0.5
# Feature source of the STTran-family models (sgg/modeling/video_sgg.py, VIDEO_FEATURES_REGISTRY): frame maps, object
# features of boxes and union-box features of pairs. "BackboneRoIFeatures" = MODEL.BACKBONE + RoIAlign + a linear box
# head (MODEL.STTRAN.OBJ_FEATURE_DIM wide).
_C.MODEL.VIDEO_FEATURES = CN()
_C.MODEL.VIDEO_FEATURES.NAME = "BackboneRoIFeatures"
_C.MODEL.VIDEO_DETECTOR = CN()  # SGDet detector (sgg/modeling/video_detector.py): torchvision Faster R-CNN heads
# "VideoObjectDetector" (torchvision's heads) or "D2VideoObjectDetector" (detectron2's RPN + StandardROIHeads; needs
# detectron2). The keys below map to detectron2's for the latter; MODEL.VIDEO_DETECTOR.D2 holds detectron2 keys
# (CONFIG_FILE, inline MODEL.* keys) that override them, and WEIGHTS is then a detectron2 checkpoint (.pkl / .pth).
_C.MODEL.VIDEO_DETECTOR.NAME = "VideoObjectDetector"
_C.MODEL.VIDEO_DETECTOR.D2 = CN(new_allowed=True)
_C.MODEL.VIDEO_DETECTOR.D2.CONFIG_FILE = ""
_C.MODEL.VIDEO_DETECTOR.WEIGHTS = ""  # local state dict of the detector ("" = random init)
_C.MODEL.VIDEO_DETECTOR.TRAIN = True  # add the detector losses while training (False = frozen)
_C.MODEL.VIDEO_DETECTOR.ANCHOR_SIZES = (16, 32, 64, 128)  # resized-frame pixels
_C.MODEL.VIDEO_DETECTOR.ASPECT_RATIOS = (0.5, 1.0, 2.0)
_C.MODEL.VIDEO_DETECTOR.REPRESENTATION_DIM = 1024
_C.MODEL.VIDEO_DETECTOR.SCORE_THRESH = 0.1  # STTran: 0.1
_C.MODEL.VIDEO_DETECTOR.NMS_THRESH = 0.4  # STTran: 0.4
_C.MODEL.VIDEO_DETECTOR.DETECTIONS_PER_FRAME = 16
_C.MODEL.VIDEO_DETECTOR.RPN_PRE_NMS_TOP_N = (2000, 600)  # (training, testing)
_C.MODEL.VIDEO_DETECTOR.RPN_POST_NMS_TOP_N = (300, 100)
_C.MODEL.VIDEO_DETECTOR.BOX_BATCH_SIZE_PER_IMAGE = 256
# Action Genome's Faster R-CNN ResNet-101 (sgg/modeling/ag_faster_rcnn.py): the frozen detector of STTran & co.
# MODEL.VIDEO_FEATURES.NAME "AGFasterRCNN" uses it as the feature source, MODEL.VIDEO_DETECTOR.NAME
# "AGFasterRCNNDetector" as the SGDet detector (same network, saved once under features.*). Upstream's values.
_C.MODEL.AG_DETECTOR = CN()
_C.MODEL.AG_DETECTOR.WEIGHTS = ""  # local faster_rcnn_ag.pth or its --from ag_detector conversion ("" = random init)
_C.MODEL.AG_DETECTOR.FREEZE = True  # upstream never trains it with the SGG model
_C.MODEL.AG_DETECTOR.BLOCKS = (3, 4, 23, 3)  # ResNet-101; smaller only for tests (a released file needs these)
_C.MODEL.AG_DETECTOR.WIDTH = 64  # stem width (64 -> 1024-channel base map, 2048-d RoI features)
_C.MODEL.AG_DETECTOR.ANCHOR_SCALES = (4, 8, 16, 32)  # x the 16-pixel base anchor
_C.MODEL.AG_DETECTOR.ANCHOR_RATIOS = (0.5, 1.0, 2.0)
_C.MODEL.AG_DETECTOR.PIXEL_MEANS_BGR = (102.9801, 115.9465, 122.7717)  # subtracted from BGR frames, no std
_C.MODEL.AG_DETECTOR.RPN_PRE_NMS_TOP_N = 6000  # proposals (upstream cfg.TEST; the detector is always in eval mode)
_C.MODEL.AG_DETECTOR.RPN_POST_NMS_TOP_N = 100
_C.MODEL.AG_DETECTOR.RPN_NMS_THRESH = 0.7
_C.MODEL.AG_DETECTOR.BBOX_STDS = (0.1, 0.1, 0.2, 0.2)  # box-delta de-normalisation
_C.MODEL.AG_DETECTOR.SCORE_THRESH = 0.1  # SGDet: per-class score threshold
_C.MODEL.AG_DETECTOR.NMS_THRESH = 0.4  # SGDet: per-class NMS (then only the best person box per frame)
_C.MODEL.AG_DETECTOR.CLEAN_CLASSES = (4, 7, 16)  # STTran's clean_class(5, 8, 17) 1-based: book, chair, food
_C.MODEL.AG_DETECTOR.CLASS_NMS_THRESH = 0.6  # STTran's test-time NMS per arg-max class (<= 0: off)
# Upstream clips the SGDet boxes of only the first frame of each 10-frame batch to the image (clip_boxes called with
# batch_size 1); True reproduces that for its released numbers, False clips every frame.
_C.MODEL.AG_DETECTOR.CLIP_FIRST_FRAME_ONLY = False
# STKET (sgg/modeling/meta_arch/stket.py, docs/stket.md): knowledge-embedded attention on STTran's pipeline. Widths,
# ENC_LAYERS / DEC_LAYERS (STKET: 2 / 2), TEMPORAL_WINDOW (2) and the losses come from MODEL.STTRAN.
_C.MODEL.STKET = CN()
# Upstream's TrainPrior.json layout (tools/compute_stket_priors.py); "" = counted on DATASETS.TRAIN[0] at build time and
# cached as OUTPUT_DIR/stket_priors_<dataset>.json. A file whose class names differ from the dataset's is refused.
_C.MODEL.STKET.PRIOR_FILE = ""
_C.MODEL.STKET.USE_SPATIAL_PRIOR = True  # marginal prior in the spatial encoder's queries / keys (-use_spatial_prior)
_C.MODEL.STKET.USE_TEMPORAL_PRIOR = True  # transition prior in the temporal decoder (-use_temporal_prior)
_C.MODEL.STKET.SPATIAL_PRIOR_LOSS = True  # spatial heads on the spatial prior embedding (-spatial_prior_loss)
# -temporal_prior_loss: temporal heads on the transition prior of the previous frame's contact set
_C.MODEL.STKET.TEMPORAL_PRIOR_LOSS = True
# A contacting predicate with predicted probability >= this joins a pair's contact set (-pred_contact_threshold;
# upstream trains with 0.8; its test script's 1.0 means "use the GT labels", which sgg never does).
_C.MODEL.STKET.CONTACT_THRESHOLD = 0.8
_C.MODEL.STKET.NOT_CONTACTING = 8  # index of not_contacting within the contacting group (Action Genome)
_C.MODEL.STKET.WINDOW_SIZE = 4  # ensemble decoder: frames of the same object class per window (-window_size)
_C.MODEL.STKET.MAX_GAP = 2  # ... chained back while consecutive frames are at most this many frames apart
_C.MODEL.STKET.ENSEMBLE_LAYERS = 2  # ensemble decoder depth (hard-coded 2 upstream)
_C.MODEL.STKET.N_LAYER = 1  # repeats of spatial encoder -> temporal decoder, same modules (-N_layer)
_C.MODEL.STKET.OUTPUT_BRANCH = "ensemble"  # branch behind the plain attention / spatial / contacting outputs
# VideoFrequencyBaseline (sgg/modeling/meta_arch/video_baselines.py): predicate frequencies given the object class
_C.MODEL.VIDEO_BASELINE = CN()
_C.MODEL.VIDEO_BASELINE.TRAIN_DATASET = ""  # "" = DATASETS.TRAIN[0]
_C.MODEL.VIDEO_BASELINE.SGDET_NUM_OBJECTS = 3  # SGDet: mean boxes of the K most frequent object classes per frame


# TEMPURA (sgg/modeling/meta_arch/tempura.py, docs/tempura.md): STTran's pipeline (MODEL.STTRAN widths) + GMM heads,
# a predicate memory and uncertainty-aware losses. Upstream flag names in parentheses.
_C.MODEL.TEMPURA = CN()
_C.MODEL.TEMPURA.NUM_MIXTURES = 6  # K components per GMM head (-K / -num_mixtures; upstream 6 PredCls, 4 SGCls/SGDet)
_C.MODEL.TEMPURA.REL_HEAD = "gmm"  # attention / spatial / contacting heads: "gmm" or "linear" (-rel_head; ablation)
_C.MODEL.TEMPURA.OBJ_HEAD = "linear"  # SGCls / SGDet object head: "linear" (upstream's published) or "gmm" (-obj_head)
_C.MODEL.TEMPURA.SAMPLING = True  # training draws logits mu + sqrt(var) * eps (False: train on the means)
_C.MODEL.TEMPURA.MULTI_LABEL_LOSS = "bce"  # spatial / contacting on the mixture: "bce" (upstream) or "margin" (-mlm)
_C.MODEL.TEMPURA.GMM_REGULARIZATION = 0.0  # weight of KL(N(mu, var) || N(mu, 1)) on the mixture variances (seed flag)
_C.MODEL.TEMPURA.UNCERTAINTY_THRESHOLD = 0.5  # pairs with mean(aleatoric + epistemic) above it are flagged `uncertain`
_C.MODEL.TEMPURA.REL_LOSS_WEIGHTING = "none"  # per-pair weights from uncertainty: none|al|ep|both (-rel_loss_weighting)
_C.MODEL.TEMPURA.OBJ_LOSS_WEIGHTING = "none"  # the same for the object loss (-obj_loss_weighting)
_C.MODEL.TEMPURA.OBJ_CON_LOSS = "none"  # "euc_con": contrastive loss on the object features (-obj_con_loss)
_C.MODEL.TEMPURA.LAMBDA_CON = 1.0  # its weight (-lambda_con)
_C.MODEL.TEMPURA.EOS_COEF = 1.0  # object CE weight of class 0 (upstream: background; sgg: the person) (-eos_coef)
_C.MODEL.TEMPURA.TRACKING = False  # object tracking branch, SGCls / SGDet (-tracking)
_C.MODEL.TEMPURA.TRACKING_LAYERS = 3  # its TransformerEncoder depth (upstream 3)
_C.MODEL.TEMPURA.TRACKING_HEADS = 8
_C.MODEL.TEMPURA.TRACKING_FFN = 1024
_C.MODEL.TEMPURA.MEMORY = CN()
_C.MODEL.TEMPURA.MEMORY.COMPUTE = "joint"  # predicate memory: "joint" (26 prototypes) or "none" (-rel_mem_compute)
_C.MODEL.TEMPURA.MEMORY.WEIGHT_TYPE = "simple"  # prototype weights: simple (class mean) | al | ep | both
_C.MODEL.TEMPURA.MEMORY.FUSION = "late"  # "late" (after the temporal decoder) or "early" (before it) (-mem_fusion)
_C.MODEL.TEMPURA.MEMORY.FEAT_SELECTION = "manual"  # lambda: "manual" = FEAT_LAMBDA, "automated" = learned gate
_C.MODEL.TEMPURA.MEMORY.FEAT_LAMBDA = 0.5  # f' = lambda f + (1 - lambda) Attn(f, M, M) (-mem_feat_lambda; SGCls 0.3)
_C.MODEL.TEMPURA.MEMORY.EPOCH_VIDEOS = 0  # training videos per epoch: the memory refreshes after each (tools/train.py
#   sets it from the dataset; a model knows no trainer, so it counts the videos it is trained on)
_C.MODEL.TEMPURA.MEMORY.PASS = "train"  # prototype features: "train" (training forward, detached) or "eval" (upstream's
#   extra no-grad eval-mode forward per video: no dropout / sampling, twice the cost)
# DSG-DETR (sgg/modeling/meta_arch/dsgdetr.py, docs/dsgdetr.md): tracking into tracklets + a tracklet transformer on
# STTran's pipeline (MODEL.STTRAN.* widths; ENC_LAYERS = spatial encoder depth, DEC_LAYERS = temporal encoder depth).
_C.MODEL.DSGDETR = CN()
_C.MODEL.DSGDETR.TRACKING = "hungarian"  # "hungarian" (DSG-DETR's tracker, every mode), "class" (one tracklet per
#                                          class, upstream's PredCls/SGDet grouping), "none" (every box alone)
_C.MODEL.DSGDETR.TRACK_COSTS = (0.5, 1.0, 1.0, 0.5)  # Hungarian cost weights: class, RoI-feature cosine, L1, GIoU
_C.MODEL.DSGDETR.TRACK_ACCEPT = 0.5  # keep an assignment when its class or feature cosine distance is below this
_C.MODEL.DSGDETR.TRACK_MAX_AGE = 50  # drop a track unmatched for this many original frame numbers (AG frame ids)
_C.MODEL.DSGDETR.OBJECT_LAYERS = 3  # tracklet transformer depth over [RoI feature | class embedding | box MLP]
_C.MODEL.DSGDETR.OBJECT_HEADS = 8
_C.MODEL.DSGDETR.OBJECT_FEEDFORWARD = 1024
_C.MODEL.DSGDETR.BOX_DIM = 128  # box-position MLP width of the object vector (upstream: 128)
# Max rows per attention sequence of the tracklet / temporal encoders; longer tracklets are cut into consecutive
# pieces (bounds the O(T^2) attention memory on long videos). 0 = whole tracklets (upstream).
_C.MODEL.DSGDETR.TRACKLET_CHUNK = 400
_C.MODEL.DSGDETR.PREDICTED_LABELS_IN_TRAINING = True  # SGCls/SGDet training: relation embeddings use the predicted
#                                                      labels (upstream); False = GT labels (STTran)
# SceneLLM (sgg/modeling/meta_arch/scenellm.py, docs/scenellm.md): VQ-VAE scene tokens -> spatial aggregation per
# frame -> optimal-transport temporal fusion -> a local LLM with LoRA -> STTran's decoder (MODEL.STTRAN widths / heads).
_C.MODEL.SCENELLM = CN()
_C.MODEL.SCENELLM.USE_LLM = True  # False: no VQ-VAE / SIA / OT / LLM, the decoder on the relation vector alone (A/B)
_C.MODEL.SCENELLM.TRAINING_STAGE = "stage2"  # vqvae | stage1 (LLM, LoRA frozen) | stage2 (+ LoRA) (CLI flag)
_C.MODEL.SCENELLM.LLM_PATH = ""  # local transformers model folder (nothing is downloaded; tools/make_tiny_llm.py DIR)
_C.MODEL.SCENELLM.LLM_DTYPE = "float32"  # float32 | bfloat16 (CPU, or CUDA with bf16) | int8 (CUDA + bitsandbytes)
_C.MODEL.SCENELLM.LORA_R = 16  # LoRA rank (m3sgg -lora_r 16); 0 = no adapters, the LLM stays frozen
_C.MODEL.SCENELLM.LORA_ALPHA = 32.0  # LoRA scaling alpha (m3sgg -lora_alpha 32)
_C.MODEL.SCENELLM.LORA_DROPOUT = 0.05  # (m3sgg -lora_dropout 0.05)
_C.MODEL.SCENELLM.LORA_TARGET_MODULES = ["q_proj", "v_proj"]  # names of the LLM's linear modules that get adapters
_C.MODEL.SCENELLM.CODE_DIM = 256  # VQ code width (m3sgg -embed_dim 1024)
_C.MODEL.SCENELLM.CODEBOOK_SIZE = 512  # codes K (REFERENCE.md: 512; m3sgg 8192; the paper's value is unverified)
_C.MODEL.SCENELLM.VQ_HIDDEN_DIM = 0  # encoder / decoder MLP width; 0 = CODE_DIM
_C.MODEL.SCENELLM.COMMITMENT_COST = 0.25  # beta of the commitment loss (m3sgg -commitment_cost 0.25)
_C.MODEL.SCENELLM.VQ_LOSS_WEIGHT = 1.0  # weight of the VQ losses in stage1 / stage2 (when the VQ-VAE still trains)
_C.MODEL.SCENELLM.FREEZE_VQVAE = False  # stage1 / stage2 keep the vqvae stage's VQ-VAE fixed (no VQ losses)
# In training, move codes with a running assignment share < 0.01 / K onto current encoder outputs (against codebook
# collapse, seen on the demo without it; also initialises the codebook from data at the first training step)
_C.MODEL.SCENELLM.VQ_RESTART_DEAD_CODES = False
# l2-normalised encoder outputs and codes (cosine assignment, losses bounded): against the codebook / commitment losses
# growing without bound when the straight-through gradient pushes the encoder outputs (seen in the SGCls / SGDet demos)
_C.MODEL.SCENELLM.VQ_NORMALIZE = False
_C.MODEL.SCENELLM.SIA_LAYERS = 2  # GCN layers over the intra-cluster graph of each frame
_C.MODEL.SCENELLM.SIA_HEADS = 4  # heads of the attention among a frame's clusters
_C.MODEL.SCENELLM.CLUSTER_RATIO = 0.5  # Ward clusters per frame = max(1, round(ratio x boxes)) (m3sgg: N / 2)
_C.MODEL.SCENELLM.OT_FRAMES_PER_TOKEN = 2  # OT fusion: T frame tokens -> ceil(T / this) LLM tokens
_C.MODEL.SCENELLM.OT_EPS = 0.05  # entropic regularisation of the Sinkhorn plan
_C.MODEL.SCENELLM.OT_ITERS = 50  # Sinkhorn iterations (fixed: deterministic, differentiable)
_C.MODEL.SCENELLM.OT_TIME_WEIGHT = 1.0  # weight of the squared temporal distance in the transport cost
_C.MODEL.SCENELLM.LLM_FEATURE_DIM = 256  # width of the LLM part of each pair feature (added to the relation vector)


# OED (sgg/modeling/meta_arch/oed.py, docs/oed.md): one-stage DETR video SGG (pair queries, instance + relation
# decoders) with a progressive refinement module over reference frames. Classes, predicate groups and the PredCls word
# embeddings come from MODEL.STTRAN (NUM_CLASSES, PREDICATE_GROUPS, EMBED_DIM, WORD_VECTORS); the backbone from
# MODEL.BACKBONE. Upstream flag names (guanw-pku/OED, m3sgg) in parentheses; defaults = upstream's SGDet settings.
_C.MODEL.OED = CN()
_C.MODEL.OED.STAGE = "spatial"  # "spatial" or "temporal" (progressive refinement; only refinement.* / temporal_* train)
_C.MODEL.OED.NUM_QUERIES = 100  # SGDet pair queries (-num_queries; PredCls uses one query per GT pair)
_C.MODEL.OED.HIDDEN_DIM = 256
_C.MODEL.OED.NHEADS = 8
_C.MODEL.OED.DIM_FEEDFORWARD = 2048
_C.MODEL.OED.ENC_LAYERS = 6
_C.MODEL.OED.DEC_LAYERS_HOPD = 6  # instance (pair) decoder depth (-dec_layers_hopd; PredCls 3)
_C.MODEL.OED.DEC_LAYERS_INTERACTION = 6  # relation decoder depth (-dec_layers_interaction; PredCls 3)
_C.MODEL.OED.DROPOUT = 0.1
_C.MODEL.OED.AUX_LOSS = True  # spatial stage: losses on the last min(hopd, interaction) - 1 earlier layers too
_C.MODEL.OED.COST_OBJ_CLASS = 1.0  # matching costs (--set_cost_obj_class / rel_class / bbox / giou)
_C.MODEL.OED.COST_RELATION = 1.0
_C.MODEL.OED.COST_BBOX = 2.5
_C.MODEL.OED.COST_GIOU = 1.0
_C.MODEL.OED.OBJ_LOSS_COEF = 1.0  # object CE (-obj_loss_coef)
_C.MODEL.OED.REL_LOSS_COEF = 2.0  # attention CE, spatial and contacting focal losses, each (-rel_loss_coef)
_C.MODEL.OED.BBOX_LOSS_COEF = 2.5  # L1 of subject and object boxes, each (-bbox_loss_coef)
_C.MODEL.OED.GIOU_LOSS_COEF = 1.0  # GIoU of subject and object boxes, each (-giou_loss_coef)
_C.MODEL.OED.EOS_COEF = 0.1  # CE weight of "no object" (-oed_eos_coef)
_C.MODEL.OED.FOCAL_ALPHA = 0.5  # alpha of the spatial / contacting focal multi-label loss (-alpha)
_C.MODEL.OED.NUM_REF_FRAMES = 2  # reference frames per key frame (-num_ref_frames)
_C.MODEL.OED.INTERVAL_TRAIN = 4  # training: references at random within +- this many annotated frames (-interval1)
_C.MODEL.OED.INTERVAL_TEST = 4  # test: references strided within +- this many annotated frames (-interval2)
_C.MODEL.OED.CAUSAL = False  # True: references from past frames only (online use; upstream also uses future frames)
_C.MODEL.OED.TOPK_FRACTIONS = (0.8, 0.5, 0.3)  # per refinement layer: fraction of the reference queries attended to
_C.MODEL.OED.FRAME_CHUNK = 16  # frames per backbone + encoder forward

def get_cfg() -> CN:
    """Return a fresh copy of sgg's default config tree (the tree above)."""
    return _C.clone()
