"""OED through tools/train_net.py on the demo twin: both stages train, evaluate (both protocols), resume exactly and
evaluate from a checkpoint; the temporal stage trains only its own parameters, starting from copies of the spatial
heads."""

import json
import os
import shutil

import torch

from tests.engine.helpers import REPO, load_model_state, run_cli

SPATIAL = os.path.join(REPO, "configs", "quick", "oed_sgdet_spatial_demo.yaml")
TEMPORAL = os.path.join(REPO, "configs", "quick", "oed_sgdet_demo.yaml")
TINY = ["MODEL.BACKBONE.OUT_CHANNELS", "8", "MODEL.OED.HIDDEN_DIM", "8", "MODEL.OED.NHEADS", "2",
        "MODEL.OED.DIM_FEEDFORWARD", "16", "MODEL.OED.DEC_LAYERS_HOPD", "2", "MODEL.OED.DEC_LAYERS_INTERACTION", "2",
        "MODEL.OED.NUM_QUERIES", "4", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "LOG_PERIOD", "1",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "()", "SOLVER.BEST_CHECKPOINT.METRIC", "",
        "DATASETS.TEST", '("demo_ag_test",)']


def _results(folder):
    with open(os.path.join(folder, "inference", "demo_ag_test", "results.json")) as f:
        return json.load(f)["video_sgg"]


def _resume_matches(cfg, straight, tmp_path, mid, extra):
    resumed = tmp_path / (straight.name + "_resumed")
    resumed.mkdir()
    shutil.copy(straight / mid, resumed / mid)
    (resumed / "last_checkpoint").write_text(mid)
    # no evaluation here: equal final weights (buffers included) give equal evaluations
    r = run_cli("--config-file", cfg, "--resume", "OUTPUT_DIR", str(resumed), *TINY, *extra, "TEST.EVAL_PERIOD", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_model_state(straight / "model_final.pth"), load_model_state(resumed / "model_final.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_spatial_then_temporal_stage_train_resume_and_evaluate(tmp_path):
    spatial = tmp_path / "spatial"
    sched = ["SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "4"]
    r = run_cli("--config-file", SPATIAL, "OUTPUT_DIR", str(spatial), *TINY, *sched)
    assert r.returncode == 0, r.stderr[-2000:]
    results = _results(spatial)
    assert "with/R@20" in results and "no[oed]/R@20" in results and "semi[oed]/R@20" not in results
    _resume_matches(SPATIAL, spatial, tmp_path, "model_0000001.pth", sched)

    temporal = tmp_path / "temporal"
    weights = ["MODEL.WEIGHTS", str(spatial / "model_final.pth")]
    r = run_cli("--config-file", TEMPORAL, "OUTPUT_DIR", str(temporal), *TINY, *sched, *weights)
    assert r.returncode == 0, r.stderr[-2000:]
    before, after = load_model_state(spatial / "model_final.pth"), load_model_state(temporal / "model_final.pth")
    assert int(after["temporal_heads_initialized"]) == 1
    for k, v in before.items():  # the spatial network is frozen
        assert torch.equal(after[k], v), k
    # the temporal heads started as copies of the spatial heads and then trained
    assert not torch.equal(after["temporal_obj_class.weight"], before["obj_class.weight"])
    mid = load_model_state(temporal / "model_0000001.pth")
    assert int(mid["temporal_heads_initialized"]) == 1
    _resume_matches(TEMPORAL, temporal, tmp_path, "model_0000001.pth", sched + weights)

    evaluated = tmp_path / "eval"
    r = run_cli("--config-file", TEMPORAL, "--eval-only", "OUTPUT_DIR", str(evaluated), *TINY,
                "MODEL.WEIGHTS", str(temporal / "model_final.pth"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert _results(evaluated) == _results(temporal)
