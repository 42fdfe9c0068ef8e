"""tools/train.py with -model oed: m3sgg's OED flags -> MODEL.OED keys, the stage configs, refusals."""

import pytest

from sgg.modeling import build_model
from tests.tools.test_train_seed_cli import overrides, train


def test_oed_flags_map_onto_config_keys_and_the_stage_picks_the_config():
    plan = train.translate(["-model", "oed", "-mode", "sgdet", "-data_path", "demo", "-num_queries", "20",
                            "-dec_layers_hopd", "2", "-dec_layers_interaction", "4", "-num_ref_frames", "3",
                            "-interval1", "5", "-interval2", "6", "-alpha", "0.25", "-bbox_loss_coef", "5",
                            "-giou_loss_coef", "2", "-obj_loss_coef", "1.5", "-rel_loss_coef", "3",
                            "-oed_eos_coef", "0.2", "-causal"])
    assert plan["config_file"].endswith("configs/quick/oed_sgdet_demo.yaml")
    o = dict(plan["overrides"])
    assert o["MODEL.META_ARCHITECTURE"] == "OED" and o["MODEL.OED.STAGE"] == "temporal"
    expected = {"NUM_QUERIES": 20, "DEC_LAYERS_HOPD": 2, "DEC_LAYERS_INTERACTION": 4, "NUM_REF_FRAMES": 3,
                "INTERVAL_TRAIN": 5, "INTERVAL_TEST": 6, "FOCAL_ALPHA": 0.25, "BBOX_LOSS_COEF": 5.0,
                "GIOU_LOSS_COEF": 2.0, "OBJ_LOSS_COEF": 1.5, "REL_LOSS_COEF": 3.0, "EOS_COEF": 0.2, "CAUSAL": True}
    cfg = train.load_config(plan["config_file"], plan["overrides"], plan["opts"])
    for key, value in expected.items():
        assert o[f"MODEL.OED.{key}"] == value and cfg.MODEL.OED[key] == value, key
    single = train.translate(["-model", "oed", "-data_path", "demo", "-oed_variant", "single"])
    assert single["config_file"].endswith("configs/quick/oed_spatial_demo.yaml")
    assert dict(single["overrides"])["MODEL.OED.STAGE"] == "spatial"
    for mode, stage, name in (("sgdet", "single", "oed_sgdet_spatial.yaml"), ("predcls", "multi", "oed_predcls.yaml")):
        args = train.build_parser().parse_args(["-model", "oed", "-mode", mode, "-oed_variant", stage])
        assert train.base_config(args).endswith(f"configs/action_genome/{name}")
    # the full-size config builds upstream's model (ResNet-50, 6 + 6 + 6 layers, 100 queries)
    full = train.load_config(train.base_config(train.build_parser().parse_args(["-model", "oed", "-mode", "sgdet"])),
                             [("MODEL.DEVICE", "cpu")], [])
    model = build_model(full)
    assert model.stage == "temporal" and model.query.num_embeddings == 100 and len(model.relation_decoder) == 6
    assert overrides(["-model", "oed", "-query_temporal_interaction"])["MODEL.OED.STAGE"] == "temporal"


@pytest.mark.parametrize("argv, message", [
    (["-model", "sttran", "-num_ref_frames", "2"], "-num_ref_frames configure(s) OED"),
    (["-model", "oed", "-oed_use_matching"], "matching head"),
    (["-model", "oed", "-fuse_semantic_pos"], "fusion"),
    (["-model", "oed", "-mode", "sgcls"], "SGCls variant is not built"),
    (["-model", "oed", "-oed_variant", "single", "-query_temporal_interaction"], "Give one of them"),
])
def test_flags_oed_does_not_honour_are_refused(argv, message, capsys):
    assert train.cli(argv) == 2
    assert message in capsys.readouterr().err
