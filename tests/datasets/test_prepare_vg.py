"""datasets/prepare_vg.py --check: OK on a complete VG-format directory, a list of problems otherwise."""

import importlib.util
import os

import h5py

from sgg.data.demo import visual_genome_demo as demo

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "prepare_vg.py")


def _script():
    spec = importlib.util.spec_from_file_location("prepare_vg", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_reports_ok_then_each_problem(tmp_path, capsys):
    root = str(tmp_path / "vg")
    os.makedirs(root)
    demo.generate_demo_dataset(root, "synthetic")
    prepare = _script()
    assert prepare.main(["--check", root, "--num-val-images", "0"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "test 90" in out and "12 object classes, 10 predicates" in out

    os.remove(os.path.join(root, "VG_100K", "10000005.jpg"))
    with h5py.File(os.path.join(root, "VG-SGG-with-attri.h5"), "a") as f:
        del f["img_to_last_rel"]
    assert prepare.main(["--check", root]) == 1
    out = capsys.readouterr().out
    assert "FOUND 2 PROBLEM(S)" in out
    assert "has no key 'img_to_last_rel'" in out and "1 of 450 images are missing" in out and "10000005.jpg" in out

    assert prepare.main(["--check", str(tmp_path / "nothing")]) == 1
    out = capsys.readouterr().out
    assert out.count("Missing VG") == 3
