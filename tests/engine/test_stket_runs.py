"""STKET through tools/train_net.py on the demo twin, in every mode: train + evaluate (per-branch metrics in
results.json), exact --resume (the trainable priors included), --eval-only of the final weights; the prior file is
counted on the training split on first use and cached beside the outputs."""

import json
import os
import shutil

import pytest
import torch

from tests.engine.helpers import load_model_state, read_metrics, run_cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {"predcls": "stket_demo.yaml", "sgcls": "stket_sgcls_demo.yaml", "sgdet": "stket_sgdet_demo.yaml"}
# The demo model shrunk further (seconds per run); 4 iterations, checkpoints every 2, evaluation at the end.
TINY = ["MODEL.BACKBONE.OUT_CHANNELS", "8", "MODEL.STTRAN.OBJ_FEATURE_DIM", "16", "MODEL.STTRAN.UNION_DIM", "8",
        "MODEL.STTRAN.VISUAL_DIM", "8", "MODEL.STTRAN.EMBED_DIM", "4", "MODEL.STTRAN.DIM_FEEDFORWARD", "16",
        "MODEL.STTRAN.OBJ_CLASSIFIER_HIDDEN", "8", "MODEL.STTRAN.POS_DIM", "4",
        "MODEL.VIDEO_DETECTOR.REPRESENTATION_DIM", "16", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0", "SOLVER.WARMUP_ITERS", "0",
        "LOG_PERIOD", "1"]


def _results(output_dir):
    with open(os.path.join(output_dir, "inference", "demo_ag_test", "results.json")) as f:
        return json.load(f)["video_sgg"]


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
def test_train_evaluate_resume_and_eval_only(mode, tmp_path):
    cfg = os.path.join(REPO, "configs", "quick", CONFIGS[mode])
    straight = tmp_path / "straight"
    r = run_cli("--config-file", cfg, "OUTPUT_DIR", str(straight), *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (straight / "stket_priors_demo_ag_train.json").is_file()  # counted on the training split, cached here
    results = _results(straight)
    for branch in ("", "spatial/", "temporal/", "ensemble/"):
        for key in ("with/R@20", "no/R@50", "with/mR@20"):
            assert 0.0 <= results[branch + key] <= 100.0
    assert results["with/R@20"] == results["ensemble/with/R@20"]  # OUTPUT_BRANCH ensemble

    # exact resume from the iteration-2 checkpoint (model_0000001.pth)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(straight / "model_0000001.pth", resumed / "model_0000001.pth")
    shutil.copy(straight / "stket_priors_demo_ag_train.json", resumed / "stket_priors_demo_ag_train.json")
    (resumed / "last_checkpoint").write_text("model_0000001.pth")
    with open(straight / "metrics.json") as src, open(resumed / "metrics.json", "w") as dst:
        dst.writelines(line for line in src if json.loads(line).get("iteration", 99) <= 1)
    r = run_cli("--config-file", cfg, "--resume", "OUTPUT_DIR", str(resumed), *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_model_state(straight / "model_final.pth"), load_model_state(resumed / "model_final.pth")
    assert a.keys() == b.keys() and "spatial_initial_prior" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    mid = load_model_state(straight / "model_0000001.pth")
    assert not torch.equal(mid["temporal_specific_prior"], a["temporal_specific_prior"])  # the priors train
    assert read_metrics(straight) == read_metrics(resumed)

    # eval-only of the final weights reproduces the final evaluation
    evaluated = tmp_path / "eval"
    r = run_cli("--config-file", cfg, "--eval-only", "OUTPUT_DIR", str(evaluated), "MODEL.WEIGHTS",
                str(straight / "model_final.pth"), *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _results(evaluated) == pytest.approx(results)


def test_a_foreign_prior_file_is_refused_with_one_line(tmp_path):
    cfg = os.path.join(REPO, "configs", "quick", "stket_demo.yaml")
    foreign = tmp_path / "foreign.json"
    entry = {"obj_cls_name": "spoon", "initial_prior": [0.0] * 26, "c_rel_idx": [], "specific_prior": []}
    foreign.write_text(json.dumps({"11": entry}))
    r = run_cli("--config-file", cfg, "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.STKET.PRIOR_FILE", str(foreign),
                *TINY)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "'spoon'" in lines[0] and "cup/glass/bottle" in lines[0]
