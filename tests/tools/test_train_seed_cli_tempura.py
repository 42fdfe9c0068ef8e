"""tools/train.py with -model tempura: the seed's TEMPURA flags and upstream's spellings -> MODEL.TEMPURA keys."""

import os

import pytest
import torch

from sgg.data.catalog import DatasetCatalog
from tests.tools.test_train_seed_cli import TINY, overrides, train


def test_seed_command_maps_and_loads():
    plan = train.translate(["-model", "tempura", "-mode", "predcls", "-data_path", "demo", "-num_mixtures", "3",
                            "-uncertainty_threshold", "0.5", "-gmm_regularization", "0.01", "-temporal_window", "5"])
    assert plan["config_file"].endswith("configs/quick/tempura_demo.yaml")
    o = dict(plan["overrides"])
    assert o["MODEL.META_ARCHITECTURE"] == "TEMPURA" and o["MODEL.TEMPURA.NUM_MIXTURES"] == 3
    assert o["MODEL.TEMPURA.UNCERTAINTY_THRESHOLD"] == 0.5 and o["MODEL.TEMPURA.GMM_REGULARIZATION"] == 0.01
    assert o["MODEL.STTRAN.TEMPORAL_WINDOW"] == 5
    # the memory refreshes once per epoch: the epoch's size comes from the loaded training set
    assert o["MODEL.TEMPURA.MEMORY.EPOCH_VIDEOS"] == plan["num_videos"] == len(DatasetCatalog.get("demo_ag_train"))
    cfg = train.load_config(plan["config_file"], plan["overrides"], plan["opts"])
    assert cfg.MODEL.TEMPURA.NUM_MIXTURES == 3 and cfg.MODEL.TEMPURA.MEMORY.EPOCH_VIDEOS == plan["num_videos"]
    for mode in ("sgcls", "sgdet"):
        assert train.translate(["-model", "tempura", "-mode", mode, "-data_path", "demo", "-rel_mem_compute",
                                "None"])["config_file"].endswith(f"configs/quick/tempura_{mode}_demo.yaml")


def test_upstream_spellings_map_onto_config_keys():
    o = overrides(["-model", "tempura", "-mode", "sgcls", "-data_path", "demo", "-K", "4",
                   "-rel_mem_compute", "joint", "-rel_mem_weight_type", "both", "-mem_fusion", "early",
                   "-mem_feat_selection", "automated", "-mem_feat_lambda", "0.3", "-rel_head", "linear",
                   "-obj_head", "gmm", "-obj_con_loss", "euc_con", "-lambda_con", "2", "-eos_coef", "0.5",
                   "-tracking", "-mlm", "-rel_loss_weighting", "al", "-obj_loss_weighting", "ep"])
    assert o["MODEL.TEMPURA.NUM_MIXTURES"] == 4
    assert o["MODEL.TEMPURA.MEMORY.COMPUTE"] == "joint" and o["MODEL.TEMPURA.MEMORY.WEIGHT_TYPE"] == "both"
    assert o["MODEL.TEMPURA.MEMORY.FUSION"] == "early" and o["MODEL.TEMPURA.MEMORY.FEAT_SELECTION"] == "automated"
    assert o["MODEL.TEMPURA.MEMORY.FEAT_LAMBDA"] == 0.3
    assert o["MODEL.TEMPURA.REL_HEAD"] == "linear" and o["MODEL.TEMPURA.OBJ_HEAD"] == "gmm"
    assert o["MODEL.TEMPURA.OBJ_CON_LOSS"] == "euc_con" and o["MODEL.TEMPURA.LAMBDA_CON"] == 2.0
    assert o["MODEL.TEMPURA.EOS_COEF"] == 0.5 and o["MODEL.TEMPURA.TRACKING"] is True
    assert o["MODEL.TEMPURA.MULTI_LABEL_LOSS"] == "margin"
    assert o["MODEL.TEMPURA.REL_LOSS_WEIGHTING"] == "al" and o["MODEL.TEMPURA.OBJ_LOSS_WEIGHTING"] == "ep"
    plain = overrides(["-model", "tempura", "-rel_mem_compute", "None", "-obj_con_loss", "None", "-data_path",
                       "/data/ag"])
    assert plain["MODEL.TEMPURA.MEMORY.COMPUTE"] == "none" and plain["MODEL.TEMPURA.OBJ_CON_LOSS"] == "none"
    assert "MODEL.TEMPURA.TRACKING" not in plain and "MODEL.TEMPURA.MULTI_LABEL_LOSS" not in plain
    assert "MODEL.TEMPURA.MEMORY.EPOCH_VIDEOS" not in plain  # no memory: the dataset is not counted
    cfg = train.load_config(train.base_config(train.build_parser().parse_args(["-model", "tempura", "-mode",
                                                                              "sgdet"])), [], [])
    assert cfg.MODEL.META_ARCHITECTURE == "TEMPURA" and cfg.TEST.RELATION.MODE == "sgdet"


@pytest.mark.parametrize("flag, value", [("-K", "3"), ("-tracking", None), ("-mem_feat_lambda", "0.5"),
                                         ("-gmm_regularization", "0.1"), ("-mlm", None)])
def test_tempura_flags_are_refused_for_other_models(flag, value, capsys):
    argv = ["-model", "sttran", flag] + ([value] if value else [])
    assert train.cli(argv) == 2
    err = capsys.readouterr().err
    assert "configures TEMPURA" in err and "frequency_baseline" in err


def test_seed_command_trains_on_the_demo(tmp_path):
    out = str(tmp_path / "tempura")
    rc = train.cli(["-model", "tempura", "-mode", "predcls", "-data_path", "demo", "-num_mixtures", "3",
                    "-uncertainty_threshold", "0.5", "-gmm_regularization", "0.01", "-temporal_window", "5",
                    "-save_path", out, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()", *TINY])
    assert rc == 0
    state = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)["model"]
    assert state["attention_head.mu.weight"].shape[0] == 3 * 3  # K = 3 components x 3 attention classes
    assert int(state["memory.videos_seen"]) == 2 and state["memory.weights"].sum() > 0
