"""DatasetCatalog's dataset options (declared per family, fixed once by setup, checked by readers), datasets_root,
and the registration of real vs demo names."""

import argparse

import pytest

from sgg.config import get_cfg
from sgg.data import build_test_loader
from sgg.data.catalog import DatasetCatalog as GLOBAL_CATALOG
from sgg.data.catalog import DatasetOptionsError, _DatasetCatalog, datasets_root
from sgg.engine import setup


@pytest.fixture
def catalog():
    c = _DatasetCatalog()

    def from_config(cfg):
        return {"root": cfg.DATASETS.VG.ROOT, "scale": int(cfg.DATASETS.VG.BOX_SCALE)}

    def validate(options):
        if options["scale"] <= 0:
            raise ValueError(f"scale must be positive, got {options['scale']}")

    c.register_options("fam", defaults={"root": "", "scale": 1024}, from_config=from_config, validate=validate,
                       keys="DATASETS.VG.*")
    c.register("fam_train", lambda: [{"root": c.options("fam")["root"]}], option_group="fam")
    c.register("plain", lambda: [{}])
    return c


def test_options_are_fixed_by_configure_and_read_only(catalog):
    assert dict(catalog.options("fam")) == {"root": "", "scale": 1024}
    cfg = get_cfg()
    cfg.DATASETS.VG.ROOT = "/data/vg"
    catalog.configure(cfg)
    assert catalog.get("fam_train") == [{"root": "/data/vg"}]
    with pytest.raises(TypeError):
        catalog.options("fam")["root"] = "elsewhere"  # a read-only view: only configure/set_options change it
    catalog.reset_options()
    assert catalog.options("fam")["root"] == ""


def test_check_configured_names_the_differing_option(catalog):
    cfg = get_cfg()
    catalog.check_configured(cfg)  # the defaults match a default config
    cfg.DATASETS.VG.ROOT = "/data/vg"
    with pytest.raises(DatasetOptionsError, match=r"\(DATASETS.VG.\*\) were not applied \(root: '' in effect, "
                                                  r"'/data/vg' in the config\).*DatasetCatalog.configure"):
        catalog.check_configured(cfg, ["fam_train"])
    catalog.check_configured(cfg, ["plain"])  # a dataset that reads no option group is unaffected
    catalog.check_configured(cfg, ["not_registered"])
    catalog.configure(cfg)
    catalog.check_configured(cfg, ["fam_train"])
    catalog.remove("fam_train")
    catalog.set_options("fam")
    catalog.check_configured(cfg, ["fam_train"])  # forgotten with the dataset


def test_set_options_validates(catalog):
    with pytest.raises(ValueError, match="scale must be positive, got 0"):
        catalog.set_options("fam", scale=0)
    with pytest.raises(KeyError, match=r"Unknown option\(s\) \['sclae'\] of dataset option group 'fam'"):
        catalog.set_options("fam", sclae=2)
    with pytest.raises(KeyError, match="No dataset option group 'nope'; registered: \\['fam'\\]"):
        catalog.options("nope")
    with pytest.raises(KeyError, match="No dataset option group 'nope'"):
        catalog.register("x", lambda: [], option_group="nope")
    assert dict(catalog.options("fam")) == {"root": "", "scale": 1024}  # a refused change changes nothing


def test_datasets_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SGG_DATASETS", str(tmp_path))
    assert datasets_root() == str(tmp_path)
    monkeypatch.delenv("SGG_DATASETS")
    assert datasets_root() == "datasets"


def test_builtin_groups_and_names():
    real = {"vg_train", "vg_test", "synthetic_genome_train", "ag_train", "ag_test", "tvsum", "summe", "ssv2_train"}
    demo = {"demo_vg_train", "demo_synthetic_test", "demo_ag_train", "demo_tvsum", "demo_tvsum_raw", "demo_ssv2_train"}
    assert real | demo <= set(GLOBAL_CATALOG.list())
    assert set(GLOBAL_CATALOG._option_groups) >= {"visual_genome", "action_genome"}
    assert GLOBAL_CATALOG._dataset_option_group["demo_ag_test"] == "action_genome"
    assert GLOBAL_CATALOG._dataset_option_group["demo_vg_test"] == "visual_genome"


def test_engine_setup_fixes_the_options_and_loaders_refuse_others(tmp_path):
    args = argparse.Namespace(config_file="", opts=["OUTPUT_DIR", str(tmp_path), "TEST.RELATION.MODE", "sgcls"],
                              eval_only=False, resume=False)
    cfg = setup(args)
    assert GLOBAL_CATALOG.options("action_genome")["filter_small_box"] is True  # "auto" + SGCls: STTran's filter
    other = cfg.clone()
    other.defrost()
    other.TEST.RELATION.MODE = "predcls"
    with pytest.raises(DatasetOptionsError, match="filter_small_box: True in effect, False in the config"):
        build_test_loader(other, "demo_ag_test")
