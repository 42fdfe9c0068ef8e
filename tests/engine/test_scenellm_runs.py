"""SceneLLM through tools/train_net.py on the demo twin with a tiny random local LLM, in every mode: train (stage 1,
then stage 2 from iteration 2 through SOLVER.STAGE2: only the LoRA adapters unfreeze) + evaluate, exact --resume
across the stage switch (the codebook-usage buffer included), --eval-only of the final weights; and the vqvae stage."""

import json
import os
import shutil

import pytest
import torch

from tests.engine.helpers import assert_one_error_line, load_model_state, read_metrics, run_cli
from tests.modeling.scenellm_tiny import tiny_llm_dir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {"predcls": "scenellm_demo.yaml", "sgcls": "scenellm_sgcls_demo.yaml", "sgdet": "scenellm_sgdet_demo.yaml"}
# The demo model shrunk further; 4 iterations (stage 2 from 2), checkpoints every 2, evaluation at the end.
TINY = ["MODEL.BACKBONE.OUT_CHANNELS", "8", "MODEL.STTRAN.OBJ_FEATURE_DIM", "16", "MODEL.STTRAN.UNION_DIM", "8",
        "MODEL.STTRAN.VISUAL_DIM", "8", "MODEL.STTRAN.EMBED_DIM", "4", "MODEL.STTRAN.DIM_FEEDFORWARD", "16",
        "MODEL.STTRAN.OBJ_CLASSIFIER_HIDDEN", "8", "MODEL.STTRAN.POS_DIM", "4",
        "MODEL.VIDEO_DETECTOR.REPRESENTATION_DIM", "16", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "MODEL.SCENELLM.CODE_DIM", "8", "MODEL.SCENELLM.CODEBOOK_SIZE", "16", "MODEL.SCENELLM.LLM_FEATURE_DIM", "8",
        "MODEL.SCENELLM.SIA_HEADS", "2", "MODEL.SCENELLM.OT_ITERS", "10",
        "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.STAGE2.START_ITER", "2",
        "TEST.EVAL_PERIOD", "0", "SOLVER.WARMUP_ITERS", "0", "LOG_PERIOD", "1"]


def _results(output_dir):
    with open(os.path.join(output_dir, "inference", "demo_ag_test", "results.json")) as f:
        return json.load(f)["video_sgg"]


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
def test_train_evaluate_resume_and_eval_only(mode, tmp_path):
    cfg = os.path.join(REPO, "configs", "quick", CONFIGS[mode])
    args = ["MODEL.SCENELLM.LLM_PATH", tiny_llm_dir(), *TINY]
    straight = tmp_path / "straight"
    r = run_cli("--config-file", cfg, "OUTPUT_DIR", str(straight), *args)
    assert r.returncode == 0, r.stderr[-3000:]
    results = _results(straight)
    for key in ("with/R@20", "no/R@50", "with/mR@20"):
        assert 0.0 <= results[key] <= 100.0
    mid = load_model_state(straight / "model_0000001.pth")  # after iterations 0, 1 = stage 1
    final = load_model_state(straight / "model_final.pth")
    lora = [k for k in final if "lora_B" in k]
    base = [k for k in final if k.startswith("llm.") and "lora_" not in k]
    assert lora and all(not mid[k].any() for k in lora)  # stage 1: the adapters (B starts at 0) did not train
    assert any(final[k].any() for k in lora)  # stage 2 trained them
    assert all(torch.equal(mid[k], final[k]) for k in base)  # the LLM's own weights never change
    assert not torch.equal(mid["to_llm.weight"], final["to_llm.weight"])
    assert final["code_counts"].sum() > mid["code_counts"].sum() > 0
    rows = [row for row in read_metrics(straight) if "scenellm/vq_perplexity" in row]
    assert rows and all(1.0 <= row["scenellm/vq_perplexity"] <= 16 for row in rows)

    # exact resume from the stage-1 checkpoint: the stage switch happens again at iteration 2
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(straight / "model_0000001.pth", resumed / "model_0000001.pth")
    (resumed / "last_checkpoint").write_text("model_0000001.pth")
    with open(straight / "metrics.json") as src, open(resumed / "metrics.json", "w") as dst:
        dst.writelines(line for line in src if json.loads(line).get("iteration", 99) <= 1)
    r = run_cli("--config-file", cfg, "--resume", "OUTPUT_DIR", str(resumed), *args)
    assert r.returncode == 0, r.stderr[-3000:]
    again = load_model_state(resumed / "model_final.pth")
    assert again.keys() == final.keys()
    for k in final:
        assert torch.equal(final[k], again[k]), k
    assert read_metrics(straight) == read_metrics(resumed)

    evaluated = tmp_path / "eval"
    r = run_cli("--config-file", cfg, "--eval-only", "OUTPUT_DIR", str(evaluated), "MODEL.WEIGHTS",
                str(straight / "model_final.pth"), *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _results(evaluated) == results


def test_vqvae_stage_then_a_missing_llm(tmp_path):
    cfg = os.path.join(REPO, "configs", "quick", "scenellm_vqvae_demo.yaml")
    out = tmp_path / "vqvae"
    r = run_cli("--config-file", cfg, "OUTPUT_DIR", str(out), "MODEL.SCENELLM.LLM_PATH", tiny_llm_dir(), *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_metrics(out)
    assert rows and {"loss_vq_reconstruction", "loss_vq_codebook", "loss_vq_commitment"} <= set(rows[-1])
    assert not any(k in rows[-1] for k in ("loss_attention", "loss_spatial", "loss_contacting"))
    assert not (out / "inference").exists()
    r = run_cli("--config-file", os.path.join(REPO, "configs", "quick", "scenellm_demo.yaml"), "OUTPUT_DIR",
                str(tmp_path / "x"), "MODEL.SCENELLM.LLM_PATH", str(tmp_path / "no_llm"), *TINY)
    assert_one_error_line(r, "MODEL.SCENELLM.LLM_PATH", "is not a folder", "make_tiny_llm.py")
