"""tools/train.py -model stket: upstream's STKET flags -> config keys, refusals, and a short run through the CLI."""

import json
import os

import pytest

from tests.tools.test_train_seed_cli import TINY, overrides, train


def test_stket_flags_map_onto_config_keys():
    o = overrides(["-model", "stket", "-mode", "sgcls", "-window_size", "3", "-pred_contact_threshold", "0.7",
                   "-N_layer", "2", "-enc_layer_num", "3", "-dec_layer_num", "1", "-use_spatial_prior",
                   "-use_temporal_prior", "False", "-spatial_prior_loss", "True", "-temporal_prior_loss", "0",
                   "-prior_file", "p.json"])
    assert o["MODEL.META_ARCHITECTURE"] == "STKET" and o["TEST.RELATION.MODE"] == "sgcls"
    assert o["MODEL.STKET.WINDOW_SIZE"] == 3 and o["MODEL.STKET.CONTACT_THRESHOLD"] == 0.7
    assert o["MODEL.STKET.N_LAYER"] == 2
    assert (o["MODEL.STTRAN.ENC_LAYERS"], o["MODEL.STTRAN.DEC_LAYERS"]) == (3, 1)
    assert o["MODEL.STKET.USE_SPATIAL_PRIOR"] is True  # a bare switch, as upstream's store_true
    assert o["MODEL.STKET.USE_TEMPORAL_PRIOR"] is False and o["MODEL.STKET.SPATIAL_PRIOR_LOSS"] is True
    assert o["MODEL.STKET.TEMPORAL_PRIOR_LOSS"] is False and o["MODEL.STKET.PRIOR_FILE"] == "p.json"
    plan = train.translate(["-model", "stket", "-mode", "sgdet", "-data_path", "demo"])
    assert plan["config_file"].endswith("configs/quick/stket_sgdet_demo.yaml")
    assert not any(k.startswith("MODEL.STKET") for k, _ in plan["overrides"])  # absent switches keep the config
    plan = train.translate(["-model", "stket", "-mode", "predcls", "-data_path", "/data/ag", "-N_layer", "1"])
    assert plan["config_file"].endswith("configs/action_genome/stket_predcls.yaml")
    cfg = train.load_config(plan["config_file"], plan["overrides"], plan["opts"])
    assert cfg.MODEL.STTRAN.ENC_LAYERS == 2 and cfg.MODEL.STKET.USE_TEMPORAL_PRIOR  # upstream's train.sh settings
    assert cfg.TEST.VIDEO_RELATION.BRANCHES == ("spatial", "temporal", "ensemble")


@pytest.mark.parametrize("argv, message", [
    (["-model", "sttran", "-window_size", "4"], "-window_size configure(s) STKET"),
    (["-model", "frequency_baseline", "-use_spatial_prior"], "-use_spatial_prior configure(s) STKET"),
    (["-model", "stket", "-pred_contact_threshold", "1.0"], "ground-truth contacting labels"),
    (["-model", "stket", "-use_temporal_prior", "maybe"], "expected True or False"),
])
def test_stket_flag_refusals(argv, message, capsys):
    try:
        code = train.cli(argv)
    except SystemExit as e:  # argparse's type errors
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_stket_trains_and_evaluates_through_the_seed_cli(tmp_path):
    out = str(tmp_path / "stket")
    rc = train.cli(["-model", "stket", "-mode", "predcls", "-data_path", "demo", "-save_path", out, "-window_size", "2",
                    "-use_temporal_prior", "False", "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0", *TINY])
    assert rc == 0
    with open(os.path.join(out, "inference", "demo_ag_test", "results.json")) as f:
        results = json.load(f)["video_sgg"]
    assert {"temporal/with/R@20", "ensemble/no/mR@50"} <= set(results)
    with open(os.path.join(out, "config.yaml")) as f:
        text = f.read()
    assert "WINDOW_SIZE: 2" in text and "USE_TEMPORAL_PRIOR: false" in text
