"""tools/train.py: the seed's single-dash flags -> config keys, refusals, and progressive training on the demo twin."""

import importlib.util
import math
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_tool():
    spec = importlib.util.spec_from_file_location("sgg_tools_train_seed", os.path.join(ROOT, "tools", "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load_tool()

# Shrinks the demo model further so that an end-to-end run takes seconds.
TINY = ["MODEL.BACKBONE.OUT_CHANNELS", "8", "MODEL.STTRAN.OBJ_FEATURE_DIM", "16", "MODEL.STTRAN.UNION_DIM", "8",
        "MODEL.STTRAN.VISUAL_DIM", "8", "MODEL.STTRAN.EMBED_DIM", "4", "MODEL.STTRAN.DIM_FEEDFORWARD", "16",
        "MODEL.STTRAN.OBJ_CLASSIFIER_HIDDEN", "8", "MODEL.STTRAN.POS_DIM", "4", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "96", "LOG_PERIOD", "1"]


def overrides(argv):
    return dict(train.translate(argv)["overrides"])


def test_flags_map_onto_config_keys():
    o = overrides(["-mode", "sgcls", "-model", "sttran", "-data_path", "/data/ag", "-datasize", "small", "-lr",
                   "2e-5", "-batch_size", "2", "-accumulate_grad_batches", "4", "-spatial_layer", "2",
                   "-temporal_layer", "4", "-hidden_dim", "256", "-temporal_window", "3", "-use_amp", "True",
                   "-save_path", "out/x", "-resume_from", "ckpt.pth", "-clip_grad", "5", "-bce_loss",
                   "-optimizer", "adam", "-scheduler", "plateau"])
    assert o["TEST.RELATION.MODE"] == "sgcls" and o["MODEL.META_ARCHITECTURE"] == "STTran"
    assert o["DATASETS.AG.ROOT"] == "/data/ag" and o["DATASETS.TRAIN"] == ("ag_train",)
    assert o["DATASETS.AG.DATASIZE"] == "mini"  # the seed's "small" is STTran's "mini"
    assert o["SOLVER.BASE_LR"] == 2e-5 and o["SOLVER.ACCUMULATE_GRAD_STEPS"] == 4
    assert o["SOLVER.IMS_PER_BATCH"] == 8  # 2 videos x 4 accumulated micro-batches
    assert (o["MODEL.STTRAN.ENC_LAYERS"], o["MODEL.STTRAN.DEC_LAYERS"]) == (2, 4)
    assert o["MODEL.STTRAN.VISUAL_DIM"] == 256 and o["MODEL.STTRAN.TEMPORAL_WINDOW"] == 3
    assert o["SOLVER.AMP.ENABLED"] is True and o["OUTPUT_DIR"] == "out/x" and o["MODEL.WEIGHTS"] == "ckpt.pth"
    assert o["MODEL.ALLOW_PARTIAL_WEIGHTS"] is True  # -resume_from = progressive training: new modules start fresh
    assert o["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"] == 5.0 and o["MODEL.STTRAN.MULTI_LABEL_LOSS"] == "bce"
    assert o["SOLVER.OPTIMIZER"] == "AdamW" and o["SOLVER.WEIGHT_DECAY"] == 0.0
    assert o["SOLVER.LR_SCHEDULER_NAME"] == "WarmupPlateau" and o["SOLVER.PLATEAU.METRIC"] == "video_sgg/with/R@20"
    plan = train.translate(["-mode", "sgdet", "-enc_layer", "3", "-nepoch", "2", "-data_path", "demo",
                            "-print_config"])
    assert plan["config_file"].endswith("configs/quick/sttran_sgdet_demo.yaml")
    assert "--config-file" in plan["train_net_argv"] and "MODEL.STTRAN.ENC_LAYERS" in plan["train_net_argv"]
    cfg = train.load_config(plan["config_file"], plan["overrides"], plan["opts"])  # every key exists
    assert cfg.MODEL.STTRAN.ENC_LAYERS == 3 and cfg.TEST.RELATION.MODE == "sgdet"


def test_epochs_become_iterations_from_the_dataset_size():
    from sgg.data.catalog import DatasetCatalog

    plan = train.translate(["-data_path", "demo", "-epochs", "3", "-batch_size", "2", "-eval_freq", "2"])
    videos = len(DatasetCatalog.get("demo_ag_train"))
    assert plan["num_videos"] == videos > 0
    o = dict(plan["overrides"])
    assert o["SOLVER.MAX_ITER"] == math.ceil(3 * videos / 2)
    assert o["TEST.EVAL_PERIOD"] == round(2 * math.ceil(videos / 2))
    assert o["SOLVER.CHECKPOINT_PERIOD"] == math.ceil(videos / 2)  # one epoch by default


@pytest.mark.parametrize("argv, message", [
    (["-model", "foo"], "unknown model"),
    (["-model", "sttran", "-num_mixtures", "3"], "-num_mixtures configures TEMPURA"),
    (["-model", "sttran", "-freeze_llm_epochs", "10"], "-freeze_llm_epochs configure(s) SceneLLM"),
    (["-batch_size", "0"], "-batch_size must be >= 1"),
    (["-eval_only"], "-eval_only needs the checkpoint"),
    (["-distributed", "True"], "-num_gpus N"),
])
def test_unsupported_models_and_flags_fail_naming_what_exists(argv, message, capsys):
    assert train.cli(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    if "-model" in argv:
        assert "sttran" in err and "frequency_baseline" in err


def test_unknown_flag_is_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        train.cli(["-mode", "predcls", "-no_such_flag", "1"])
    assert e.value.code == 2
    assert "-no_such_flag" in capsys.readouterr().err


def test_progressive_training_predcls_to_sgcls(tmp_path):
    """predcls trains and saves; sgcls starts from its weights (-resume_from), with a fresh optimizer."""
    pred_dir, sg_dir = str(tmp_path / "predcls"), str(tmp_path / "sgcls")
    common = ["-model", "sttran", "-data_path", "demo", "-lr", "1e-3"]
    rc = train.cli(["-mode", "predcls", *common, "-save_path", pred_dir, "SOLVER.MAX_ITER", "2",
                    "DATASETS.TEST", "()", *TINY])
    assert rc == 0
    final = os.path.join(pred_dir, "model_final.pth")
    predcls_state = torch.load(final, map_location="cpu", weights_only=False)["model"]
    assert not any(k.startswith("object_classifier.") for k in predcls_state)
    rc = train.cli(["-mode", "sgcls", *common, "-save_path", sg_dir, "-resume_from", final, "SOLVER.MAX_ITER", "1",
                    "SOLVER.BASE_LR", "0.0", "SOLVER.WARMUP_ITERS", "0", "DATASETS.TEST", "()", *TINY])
    assert rc == 0
    sg = torch.load(os.path.join(sg_dir, "model_final.pth"), map_location="cpu", weights_only=False)
    # lr 0: the shared weights are exactly the PredCls ones (loaded, not re-initialised) ...
    for key in ("relation.subj_fc.weight", "transformer.frame_embedding.weight", "attention_head.bias"):
        assert torch.equal(sg["model"][key], predcls_state[key])
    # ... the object classifier exists and the optimizer / iteration did not come from the PredCls run
    assert any(k.startswith("object_classifier.") for k in sg["model"])
    assert sg["iteration"] == 0


def test_frequency_baseline_is_evaluated_by_the_video_evaluator(tmp_path):
    out = str(tmp_path / "freq")
    assert train.cli(["-model", "frequency_baseline", "-mode", "predcls", "-data_path", "demo", "-save_path", out,
                      "INPUT.MIN_SIZE_TEST", "32", "INPUT.MAX_SIZE_TEST", "64"]) == 0
    import json

    with open(os.path.join(out, "inference", "demo_ag_test", "results.json")) as f:
        results = json.load(f)
    r20 = results["video_sgg"]["with/R@20"]
    assert 0.0 < r20 < 100.0
