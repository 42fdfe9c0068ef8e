"""The built wheel: sgg + its configs (as sgg/model_zoo/configs) + tools (as sgg_tools, behind the console scripts),
and the model-zoo lookup in that installed layout."""

import configparser
import glob
import os
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (path,) = glob.glob(str(out / "sgg-*.whl"))
    return path


def test_wheel_carries_configs_tools_and_console_scripts(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    repo_configs = sorted(os.path.relpath(p, os.path.join(REPO, "configs"))
                          for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
    packaged = sorted(n[len("sgg/model_zoo/configs/"):] for n in names if n.startswith("sgg/model_zoo/configs/"))
    assert packaged == repo_configs and len(packaged) > 10
    tools = {os.path.basename(p) for p in glob.glob(os.path.join(REPO, "tools", "*.py"))}
    assert {n[len("sgg_tools/"):] for n in names if n.count("/") == 1 and n.startswith("sgg_tools/")} == tools
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(zipfile.ZipFile(wheel).read(entry_points).decode())
    scripts = dict(parser["console_scripts"])
    assert scripts["sgg-train"] == "sgg_tools.train_net:cli" and scripts["sgg-train-seed"] == "sgg_tools.train:cli"
    assert scripts["sgg-tune"] == "sgg_tools.tune:cli"
    for target in scripts.values():
        module = target.split(":")[0].replace(".", "/") + ".py"
        assert module in names, target
    # nothing generated or cached rides along
    generated = (".pth", ".pyc", ".png", ".mp4", ".h5")
    assert not [n for n in names if n.endswith(generated) or n.startswith(("datasets/", "output"))]


def test_model_zoo_finds_the_packaged_configs_in_an_installed_layout(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = ("import sgg, sgg.model_zoo as z; p = z.get_config_file('quick/sttran_demo.yaml'); print(p); "
            "print(len(z.list_config_files('quick')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")))
    assert r.returncode == 0, r.stderr[-2000:]
    path, count = r.stdout.split()
    assert path.startswith(str(tmp_path / "site" / "sgg" / "model_zoo" / "configs"))
    assert int(count) == len(glob.glob(os.path.join(REPO, "configs", "quick", "*.yaml")))


def test_model_zoo_in_a_checkout_and_its_errors():
    from sgg.model_zoo import get_config_file, list_config_files, resolve_config_file

    assert get_config_file("configs/quick/speaq_demo.yaml") == os.path.join(REPO, "configs", "quick", "speaq_demo.yaml")
    assert "quick/speaq_demo.yaml" in list_config_files("quick")
    with pytest.raises(FileNotFoundError, match="Did you mean: quick/speaq_demo.yaml"):
        get_config_file("speaq_demo.yaml")
    assert resolve_config_file("no/such/thing.yaml") is None


def test_import_sgg_is_light_and_exports_the_first_names():
    code = "import sys, sgg; assert 'torch' not in sys.modules; print(sgg.get_cfg().MODEL.DEVICE, sgg.__version__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["auto", "0.1.0"]
    import sgg

    assert {"get_cfg", "build_model", "Predictor", "model_zoo", "DatasetCatalog"} <= set(dir(sgg))
    with pytest.raises(AttributeError):
        sgg.no_such_name  # noqa: B018
