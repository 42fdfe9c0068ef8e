"""sgg without detectron2: nothing imports it, everything else works, and asking for it fails with one line."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs in a fresh interpreter in which a meta-path finder refuses detectron2, whether or not it is installed.
SCRIPT = textwrap.dedent("""
    import contextlib, importlib, importlib.abc, io, pkgutil, runpy, sys

    class RefuseDetectron2(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "detectron2" or name.startswith("detectron2."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, RefuseDetectron2())
    import sgg
    names = [m.name for m in pkgutil.walk_packages(sgg.__path__, "sgg.")]
    for name in names:
        importlib.import_module(name)
    assert not [m for m in sys.modules if m.split(".")[0] == "detectron2"], "an sgg module imported detectron2"
    from sgg.config.detectron2 import detectron2_available
    assert not detectron2_available()

    # Everything that does not ask for detectron2 is built as before.
    from sgg.config import get_cfg
    from sgg.modeling import BACKBONE_REGISTRY, build_backbone
    assert "D2Backbone" in BACKBONE_REGISTRY.names()
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "SmallCNN", "MODEL.BACKBONE.OUT_CHANNELS", 8])
    assert build_backbone(cfg).out_channels == 8

    # Asking for it from the command line: exit code 2 and one error line, before any data is generated.
    sys.argv = ["train_net.py", "--config-file", "configs/quick/detr_demo.yaml", "OUTPUT_DIR", sys.argv[1],
                "MODEL.BACKBONE.NAME", "D2Backbone", "MODEL.DEVICE", "cpu"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_path("tools/train_net.py", run_name="__main__")
        except SystemExit as e:
            code = e.code
    print("modules", len(names))
    print("code", code)
    print("stderr", err.getvalue())
""")


def test_sgg_imports_and_runs_without_detectron2(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", SGG_DATASETS=str(tmp_path / "datasets"))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "out")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert int(out.split("modules ")[1].split()[0]) > 50  # really every module of the package
    assert "code 2" in out
    errors = [line for line in out.split("stderr ", 1)[1].splitlines() if line.startswith("error:")]
    assert errors == [
        "error: MODEL.BACKBONE.NAME 'D2Backbone' needs detectron2, which is not installed; install it with: "
        "pip install 'git+https://github.com/facebookresearch/detectron2.git' (after torch; a prebuilt wheel: "
        "pip install detectron2-*.whl; see docs/detectron2.md)."], out
    assert not (tmp_path / "datasets").exists()  # refused before any data was generated
