"""tools/benchmark.py track: GT identities from the sidecar, and the tracker table (Hungarian vs class vs none)."""

import argparse
import importlib.util
import os

import numpy as np
import pytest

from sgg.data.datasets.action_genome import load_action_genome
from sgg.data.demo.action_genome_demo import ensure_demo_action_genome

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench():
    spec = importlib.util.spec_from_file_location("sgg_bench_track", os.path.join(ROOT, "tools/benchmarks/track.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("SGG_DATASETS", str(tmp_path))
    return tmp_path


def test_gt_identities_follow_the_objects(datasets):
    bench = _bench()
    root = ensure_demo_action_genome(variant="tracks")
    video = load_action_genome(root, "test")[0]
    ids = bench.gt_identities(root, video)
    assert [len(i) for i in ids] == [len(f["boxes"]) for f in video["frames"]]
    assert all(i[0] == bench.PERSON_ID for i in ids)
    assert all(len(np.unique(i)) == len(i) for i in ids)  # one identity per box of a frame


def test_track_table_scores_the_three_methods(datasets, capsys):
    bench = _bench()
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.run(parser.parse_args([])) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(rows) == {"hungarian", "class", "none"}
    mota = {k: float(v[6]) for k, v in rows.items()}
    # Same-class objects: grouping by class merges them (conflicts), no tracking splits everything; the tracker
    # does better than both on this data.
    assert int(rows["class"][5]) > 0 and int(rows["none"][4]) > 0
    assert mota["hungarian"] > max(mota["class"], mota["none"])


def test_missing_sidecar_is_a_clear_error(datasets):
    bench = _bench()
    root = ensure_demo_action_genome()
    video = load_action_genome(root, "test")[0]
    with pytest.raises(FileNotFoundError, match="--variant tracks"):
        bench.gt_identities(root, video)


def test_track_table_from_a_dsgdetr_checkpoint(datasets, tmp_path, capsys):
    import torch

    from sgg.config import get_cfg
    from sgg.modeling import build_model
    from tests.modeling.meta_arch.test_dsgdetr import TINY

    pairs = [(k, v) for k, v in zip(TINY[::2], TINY[1::2]) if k.startswith(("MODEL", "INPUT"))]
    opts = [x for kv in pairs for x in kv] + ["DATASETS.TEST", "('demo_ag_tracks_test',)"]
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quick/dsgdetr_demo.yaml"))
    cfg.merge_from_list(opts)
    torch.manual_seed(0)
    weights = str(tmp_path / "model.pth")
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    bench = _bench()
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--config-file", os.path.join(ROOT, "configs/quick/dsgdetr_demo.yaml"),
                              "--weights", weights, *opts])
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert "tracker input: model" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(rows) == {"hungarian", "class", "none"} and int(rows["class"][5]) > 0
