"""Config: defaults tree, _BASE_ inheritance, strict keys with hints, type checks, python configs, @configurable."""

import pytest

from sgg.config import CfgNode, ConfigError, configurable, get_cfg


def test_default_tree_has_the_documented_sections():
    cfg = get_cfg()
    for key in ("MODEL", "INPUT", "DATASETS", "DATALOADER", "SOLVER", "TEST", "OUTPUT_DIR", "SEED", "CUDNN_BENCHMARK",
                "DETERMINISTIC", "VERSION"):
        assert key in cfg
    m = cfg.DATASETS.MULTI_DATASET
    assert (m.ENABLED, m.REAL_SAMPLING_RATIO, m.SYNTHETIC_SAMPLING_RATIO, m.REAL_LOSS_WEIGHT,
            m.SYNTHETIC_LOSS_WEIGHT) == (False, 0.7, 0.3, 1.0, 0.5)


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 10\nDATASETS:\n  TRAIN: ('a',)\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  MAX_ITER: 20\n  STEPS: (5, 8)\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(tmp_path / "child.yaml"))
    cfg.merge_from_list(["SOLVER.BASE_LR", "1e-3"])
    assert cfg.SOLVER.MAX_ITER == 20 and cfg.SOLVER.BASE_LR == 1e-3
    assert cfg.SOLVER.STEPS == (5, 8) and cfg.DATASETS.TRAIN == ("a",)


def test_unknown_key_in_file_names_file_and_closest_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("SOLVER:\n  MAX_ITERS: 3\n")
    with pytest.raises(ConfigError) as e:
        get_cfg().merge_from_file(str(tmp_path / "bad.yaml"))
    assert str(e.value) == (f"Unknown config key 'SOLVER.MAX_ITERS' (from {tmp_path / 'bad.yaml'}). "
                            "Did you mean 'SOLVER.MAX_ITER'?")


def test_type_mismatch_and_odd_overrides():
    cfg = get_cfg()
    with pytest.raises(ConfigError, match="expects type bool"):
        cfg.merge_from_list(["DETERMINISTIC", "3"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        cfg.merge_from_list(["SOLVER.BASE_LR"])
    cfg.merge_from_list(["SOLVER.BASE_LR", "2"])  # int -> float is fine
    assert cfg.SOLVER.BASE_LR == 2.0 and isinstance(cfg.SOLVER.BASE_LR, float)


def test_python_config_refused_unless_allowed(tmp_path):
    py = tmp_path / "cfg.py"
    py.write_text("from sgg.config import get_cfg\ncfg = get_cfg()\ncfg.SOLVER.MAX_ITER = 7\n")
    with pytest.raises(ConfigError, match="Refusing to execute Python config"):
        get_cfg().merge_from_file(str(py))
    cfg = get_cfg()
    cfg.merge_from_file(str(py), allow_unsafe=True)
    assert cfg.SOLVER.MAX_ITER == 7


def test_frozen_config_cannot_change():
    cfg = get_cfg()
    cfg.freeze()
    with pytest.raises(ConfigError, match="frozen"):
        cfg.merge_from_list(["SEED", "1"])


class _Head:
    @configurable
    def __init__(self, *, dim: int, num_classes: int = 3):
        self.dim, self.num_classes = dim, num_classes

    @classmethod
    def from_config(cls, cfg):
        return {"dim": cfg.MODEL.BACKBONE.OUT_CHANNELS, "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES}


def test_configurable_three_ways():
    cfg = get_cfg()
    h = _Head(cfg)
    assert (h.dim, h.num_classes) == (256, 150)
    h = _Head(cfg, num_classes=5)
    assert (h.dim, h.num_classes) == (256, 5)
    h = _Head(dim=8)
    assert (h.dim, h.num_classes) == (8, 3)


def test_configurable_function():
    @configurable(from_config=lambda cfg: {"x": cfg.SOLVER.MAX_ITER})
    def f(*, x, y=1):
        return x + y

    assert f(get_cfg()) == 1001
    assert f(get_cfg(), y=2) == 1002
    assert f(x=1) == 2


def test_cfgnode_dump_roundtrip(tmp_path):
    cfg = get_cfg()
    cfg.SOLVER.MAX_ITER = 42
    (tmp_path / "c.yaml").write_text(cfg.dump())
    again = get_cfg()
    again.merge_from_file(str(tmp_path / "c.yaml"))
    assert again.SOLVER.MAX_ITER == 42 and isinstance(again, CfgNode)
