"""TEMPURA through tools/train_net.py on the demo twin: exact resume restores the predicate memory (prototypes and the
running epoch's sums), and --eval-only from the checkpoint reproduces the training run's evaluation."""

import json
import os
import shutil

import torch

from tests.engine.helpers import REPO, load_model_state, run_cli

CFG = os.path.join(REPO, "configs", "quick", "tempura_demo.yaml")
TINY = ["MODEL.BACKBONE.OUT_CHANNELS", "8", "MODEL.STTRAN.OBJ_FEATURE_DIM", "16", "MODEL.STTRAN.UNION_DIM", "8",
        "MODEL.STTRAN.VISUAL_DIM", "8", "MODEL.STTRAN.EMBED_DIM", "4", "MODEL.STTRAN.DIM_FEEDFORWARD", "16",
        "MODEL.STTRAN.OBJ_CLASSIFIER_HIDDEN", "8", "MODEL.STTRAN.POS_DIM", "4", "MODEL.TEMPURA.NUM_MIXTURES", "2",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "LOG_PERIOD", "1", "SOLVER.MAX_ITER", "6",
        "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.WARMUP_ITERS", "0", "MODEL.TEMPURA.MEMORY.EPOCH_VIDEOS", "2",
        "TEST.EVAL_PERIOD", "6", "SOLVER.BEST_CHECKPOINT.METRIC", "", "SOLVER.PLATEAU.METRIC", ""]


def _results(folder):
    with open(os.path.join(folder, "inference", "demo_ag_test", "results.json")) as f:
        return json.load(f)["video_sgg"]


def test_resume_restores_the_memory_and_eval_only_reproduces(tmp_path):
    straight = tmp_path / "straight"
    r = run_cli("--config-file", CFG, "OUTPUT_DIR", str(straight), *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    mid = load_model_state(straight / "model_0000002.pth")
    # after 3 videos: one refresh (epoch of 2) and one video in the running sums, all in the checkpoint
    assert int(mid["memory.videos_seen"]) == 3 and mid["memory.valid"].any() and mid["memory.weights"].sum() > 0

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(straight / "model_0000002.pth", resumed / "model_0000002.pth")
    (resumed / "last_checkpoint").write_text("model_0000002.pth")
    r = run_cli("--config-file", CFG, "--resume", "OUTPUT_DIR", str(resumed), *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    a = load_model_state(straight / "model_final.pth")
    b = load_model_state(resumed / "model_final.pth")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert int(a["memory.videos_seen"]) == 6 and not torch.equal(a["memory.memory"], mid["memory.memory"])
    assert _results(straight) == _results(resumed)

    evaluated = tmp_path / "eval"
    r = run_cli("--config-file", CFG, "--eval-only", "OUTPUT_DIR", str(evaluated), "MODEL.WEIGHTS",
                str(straight / "model_final.pth"), *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    results = _results(evaluated)
    assert results == _results(straight)  # the memory came with the weights
    # the per-pair uncertainties reach results.json (summary of the predictions)
    assert results["uncertainty/mean"] > 0 and 0 <= results["uncertainty/uncertain_percent"] <= 100
