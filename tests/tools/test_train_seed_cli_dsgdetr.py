"""tools/train.py for DSG-DETR: -model dsg-detr, its configs, its flags (-tracker, -tracklet_chunk) and refusals."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_tool():
    spec = importlib.util.spec_from_file_location("sgg_tools_train_seed_dsg", os.path.join(ROOT, "tools", "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load_tool()


@pytest.mark.parametrize("mode, demo, full", [
    ("predcls", "configs/quick/dsgdetr_demo.yaml", "configs/action_genome/dsgdetr_predcls.yaml"),
    ("sgcls", "configs/quick/dsgdetr_sgcls_demo.yaml", "configs/action_genome/dsgdetr_sgcls.yaml"),
    ("sgdet", "configs/quick/dsgdetr_sgdet_demo.yaml", "configs/action_genome/dsgdetr_sgdet.yaml"),
])
def test_model_flag_picks_dsgdetr_configs(mode, demo, full):
    plan = train.translate(["-model", "dsg-detr", "-mode", mode, "-data_path", "demo"])
    assert plan["config_file"].endswith(demo)
    plan = train.translate(["-model", "dsg-detr", "-mode", mode, "-data_path", "/data/ag"])
    assert plan["config_file"].endswith(full)
    cfg = train.load_config(plan["config_file"], plan["overrides"], plan["opts"])
    assert cfg.MODEL.META_ARCHITECTURE == "DSGDETR" and cfg.TEST.RELATION.MODE == mode
    assert cfg.MODEL.DSGDETR.TRACKING == "hungarian" and tuple(cfg.MODEL.DSGDETR.TRACK_COSTS) == (0.5, 1.0, 1.0, 0.5)


def test_dsgdetr_flags_map_onto_config_keys():
    plan = train.translate(["-model", "dsg-detr", "-mode", "sgdet", "-data_path", "demo", "-tracker", "class",
                            "-tracklet_chunk", "64", "-enc_layer", "2", "-dec_layer", "4", "-bce_loss", "-lr", "1e-5"])
    o = dict(plan["overrides"])
    assert o["MODEL.META_ARCHITECTURE"] == "DSGDETR"
    assert o["MODEL.DSGDETR.TRACKING"] == "class" and o["MODEL.DSGDETR.TRACKLET_CHUNK"] == 64
    assert (o["MODEL.STTRAN.ENC_LAYERS"], o["MODEL.STTRAN.DEC_LAYERS"]) == (2, 4)  # spatial / temporal encoders
    cfg = train.load_config(plan["config_file"], plan["overrides"], plan["opts"])
    assert cfg.MODEL.DSGDETR.TRACKING == "class" and cfg.MODEL.DSGDETR.TRACKLET_CHUNK == 64
    assert cfg.MODEL.STTRAN.MULTI_LABEL_LOSS == "bce" and cfg.SOLVER.BASE_LR == 1e-5
    assert "MODEL.DSGDETR.TRACKING" in plan["train_net_argv"]
    o = dict(train.translate(["-model", "dsg-detr", "-tracker", "none"])["overrides"])
    assert o["MODEL.DSGDETR.TRACKING"] == "none"
    assert "MODEL.DSGDETR.TRACKING" not in dict(train.translate(["-model", "dsg-detr"])["overrides"])


@pytest.mark.parametrize("argv, message", [
    (["-model", "sttran", "-tracker", "class"], "-tracker configures -model dsg-detr"),
    (["-model", "frequency_baseline", "-tracklet_chunk", "8"], "-tracklet_chunk configures -model dsg-detr"),
])
def test_dsgdetr_flags_are_refused_for_other_models(argv, message, capsys):
    assert train.cli(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_tracker_value_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        train.cli(["-model", "dsg-detr", "-tracker", "sort"])
    assert e.value.code == 2
    assert "hungarian" in capsys.readouterr().err
