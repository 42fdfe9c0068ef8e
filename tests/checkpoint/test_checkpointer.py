"""Atomic checkpoint writes, safe loads and key-mismatch reporting."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from sgg.checkpoint import CheckpointError, DetectionCheckpointer

KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys, torch
    from torch import nn
    from sgg.checkpoint import DetectionCheckpointer

    class KillWhilePickling:
        # torch.save pickles this after it has started writing the file: die mid-write.
        def __reduce__(self):
            os.kill(os.getpid(), signal.SIGKILL)

    model = nn.Linear(256, 256)
    ckpt = DetectionCheckpointer(model, sys.argv[1], save_to_disk=True)
    ckpt.save("model_0000009", iteration=9)
    ckpt.save("model_0000019", iteration=19, big=torch.randn(1 << 20), poison=KillWhilePickling())
""")


def test_kill_during_save_leaves_last_checkpoint_loadable(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(tmp_path)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert not (tmp_path / "model_0000019.pth").exists()
    model = nn.Linear(256, 256)
    extra = DetectionCheckpointer(model, str(tmp_path), save_to_disk=True).resume_or_load("", resume=True)
    assert extra["iteration"] == 9


def test_save_and_load_roundtrip_reports_missing_keys(tmp_path, caplog):
    src = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    DetectionCheckpointer(src, str(tmp_path), save_to_disk=True).save("model_final", iteration=3)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]  # no temp files left behind
    dst = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(2, 1))
    before = dst[0].weight.detach().clone()
    expected = (r"is not a checkpoint of the Sequential model this config builds: 2 model tensor\(s\) missing from it "
                r"\(2.weight, 2.bias\).*MODEL.ALLOW_PARTIAL_WEIGHTS")
    with pytest.raises(CheckpointError, match=expected):
        DetectionCheckpointer(dst, save_to_disk=False).load(str(tmp_path / "model_final.pth"))
    assert torch.equal(dst[0].weight, before)  # strict: nothing loaded
    with caplog.at_level("WARNING"):
        DetectionCheckpointer(dst, save_to_disk=False, allow_partial=True).load(str(tmp_path / "model_final.pth"))
    assert torch.equal(dst[0].weight, src[0].weight)
    assert "not found in the checkpoint" in caplog.text and "2.{bias, weight}" in caplog.text
    assert "Partial load" in caplog.text


def test_bare_state_dict_is_accepted(tmp_path):
    src = nn.Linear(3, 2)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    dst = nn.Linear(3, 2)
    DetectionCheckpointer(dst, save_to_disk=False).load(str(tmp_path / "w.pth"))
    assert torch.equal(dst.weight, src.weight)


def test_last_checkpoint_naming_missing_file(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_0000099.pth")
    with pytest.raises(CheckpointError, match="names 'model_0000099.pth', which does not exist"):
        DetectionCheckpointer(nn.Linear(1, 1), str(tmp_path), save_to_disk=True).resume_or_load("", resume=True)


def test_a_pruned_checkpoint_loads_with_its_masks_applied(tmp_path):
    """torch.nn.utils.prune saves weight_orig + weight_mask; loading into a plain model must apply the mask (not
    leave weight missing, nor load the unpruned weight_orig)."""
    from torch.nn.utils import prune

    torch.manual_seed(0)
    pruned = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    prune.global_unstructured([(pruned[0], "weight"), (pruned[2], "weight")], pruning_method=prune.L1Unstructured,
                              amount=0.5)
    assert "0.weight_orig" in pruned.state_dict() and "0.weight" not in pruned.state_dict()
    torch.save({"model": pruned.state_dict()}, tmp_path / "pruned.pth")
    plain = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    DetectionCheckpointer(plain).load(str(tmp_path / "pruned.pth"))  # strict: every tensor is covered
    assert torch.equal(plain[0].weight, pruned[0].weight) and (plain[0].weight == 0).sum() > 0
    x = torch.randn(5, 8)
    assert torch.equal(plain(x), pruned(x))
