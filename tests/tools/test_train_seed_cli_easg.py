"""tools/train.py on EASG: detection (-dataset / -mode / -data_path), config selection, refusals, and the seed's
"fine-tune on EASG" — an Action Genome STTran checkpoint loaded into STTran-EASG, with the skipped tensors reported."""

import os

import pytest
import torch

from sgg.config import get_cfg
from sgg.modeling import build_model
from tests.data.easg_layout import TINY_SIZES, write_easg
from tests.tools.tool_loader import load_tool

train = load_tool("train")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _overrides(argv):
    return dict(train.translate(argv)["overrides"])


def test_easg_is_detected_and_mapped(tmp_path):
    root = write_easg(tmp_path / "EASG", features=False, frames=False)
    plan = train.translate(["-mode", "edgecls", "-model", "sttran", "-data_path", root, "-resume_from", "ag.pth"])
    o = dict(plan["overrides"])
    assert plan["config_file"].endswith("configs/easg/sttran_edgecls.yaml")
    assert o["MODEL.META_ARCHITECTURE"] == "STTranEASG" and o["DATASETS.EASG.ROOT"] == root
    assert o["DATASETS.TRAIN"] == ("easg_train",) and o["DATASETS.TEST"] == ("easg_val",)
    assert o["MODEL.WEIGHTS"] == "ag.pth" and o["MODEL.ALLOW_PARTIAL_WEIGHTS"] is True
    assert "SOLVER.IMS_PER_BATCH" not in o  # the EASG config's graphs per step are kept
    # sgcls exists in both datasets: the folder decides
    assert _overrides(["-mode", "sgcls", "-data_path", root])["MODEL.META_ARCHITECTURE"] == "STTranEASG"
    assert _overrides(["-mode", "sgcls", "-data_path", "demo"])["MODEL.META_ARCHITECTURE"] == "STTran"
    plan = train.translate(["-mode", "easgcls", "-model", "easg", "-data_path", "demo_easg", "-scheduler", "plateau",
                            "-batch_size", "2"])
    o = dict(plan["overrides"])
    assert plan["config_file"].endswith("configs/quick/easg_linear_easgcls_demo.yaml")
    assert o["MODEL.META_ARCHITECTURE"] == "EASGLinear" and o["SOLVER.PLATEAU.METRIC"] == "easg/score"
    assert o["SOLVER.IMS_PER_BATCH"] == 2
    cfg = train.load_config(plan["config_file"], plan["overrides"], plan["opts"])
    assert cfg.TEST.RELATION.MODE == "easgcls" and cfg.DATASETS.TRAIN == ("demo_easg_train",)
    assert _overrides(["-dataset", "EASG", "-mode", "sgcls", "-model", "frequency_baseline"])[
        "MODEL.META_ARCHITECTURE"] == "EASGFrequencyBaseline"
    for argv, match in ((["-dataset", "EASG", "-mode", "predcls"], "EASG's modes are edgecls, sgcls, easgcls"),
                        (["-mode", "edgecls", "-model", "tempura"], "on EASG sgg has"),
                        (["-mode", "edgecls", "-data_path", "demo"], "-data_path demo_easg"),
                        (["-dataset", "action_genome", "-mode", "easgcls"], "is an EASG mode"),
                        (["-dataset", "kinetics"], "give action_genome or EASG")):
        with pytest.raises(train.SeedFlagError, match=match):
            train.translate(argv)


def test_ag_checkpoint_fine_tunes_on_easg(tmp_path):
    """The seed's flow: an AG-trained STTran -> -resume_from into STTran-EASG on an EASG folder. What fits (backbone,
    box head, relation.obj_fc) is loaded, the rest is reported in one block."""
    sizes = ["MODEL.BACKBONE.OUT_CHANNELS", "8", "MODEL.STTRAN.OBJ_FEATURE_DIM", "16", "MODEL.STTRAN.VISUAL_DIM", "8",
             "MODEL.STTRAN.EMBED_DIM", "4", "MODEL.STTRAN.DIM_FEEDFORWARD", "16", "MODEL.STTRAN.UNION_DIM", "8",
             "MODEL.STTRAN.OBJ_CLASSIFIER_HIDDEN", "8", "MODEL.STTRAN.POS_DIM", "4", "INPUT.MIN_SIZE_TEST", "48",
             "INPUT.MAX_SIZE_TEST", "64"]
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "quick", "sttran_demo.yaml"))
    cfg.merge_from_list(sizes)
    torch.manual_seed(0)
    ag = build_model(cfg)
    ag_path = str(tmp_path / "ag_model_final.pth")
    torch.save({"model": ag.state_dict(), "iteration": 479}, ag_path)
    root = write_easg(tmp_path / "EASG")
    out = tmp_path / "easg_run"
    code = train.cli(["-mode", "sgcls", "-model", "sttran", "-data_path", root, "-resume_from", ag_path,
                      "-config", os.path.join(REPO, "configs", "quick", "easg_sttran_sgcls_demo.yaml"),
                      "-save_path", str(out), "-lr", "0", "SOLVER.MAX_ITER", "1", "TEST.EVAL_PERIOD", "0",
                      "SOLVER.WARMUP_ITERS", "0", "SOLVER.IMS_PER_BATCH", "2", *sizes, *TINY_SIZES])
    assert code == 0
    log = (out / "log.txt").read_text()
    block = log[log.index("Partial load of"):]
    assert "loaded (" in block and "features.backbone" in block and "relation.obj_fc (2)" in block
    assert "skipped, other shape" in block and "relation.obj_embed.weight (36, 4) -> (5, 4)" in block
    assert "skipped, not in the checkpoint" in block and "relation.verb_fc" in block
    # the transformer's FFN hidden bias has the same shape in both, but its module does not fit: not loaded
    assert "in a module that does not fit" in block and "transformer.encoder (1)" in block.split("does not fit")[1]
    assert "unused checkpoint tensors" in block and "attention_head" in block
    tuned = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    src = ag.state_dict()
    for k in ("relation.obj_fc.weight", "features.box_head.1.weight", "features.backbone.body.0.0.weight"):
        assert torch.equal(tuned[k], src[k]), k  # lr 0: still the AG weights
    assert tuned["relation.obj_embed.weight"].shape == (5, 4)  # EASG's classes, freshly initialised
