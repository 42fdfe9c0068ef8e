"""Repository-root conftest: puts the repository root on sys.path (so ``tests.*`` helper modules import in spawned
worker processes too) and keeps torch to one thread per test process on small CI machines."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_sgg_logger():
    """A run through tools/train_net.py installs the 'sgg' logger's console/file handlers, stops propagation and may
    switch on deterministic algorithms; undo that after each test so later tests' ``caplog`` sees sgg's warnings, no
    handler holds a stale file, and no global torch mode leaks."""
    yield
    log = logging.getLogger("sgg")
    for handler in list(log.handlers):
        if getattr(handler, "_sgg_handler", False):
            log.removeHandler(handler)
            handler.close()
    log.propagate = True
    import torch

    torch.use_deterministic_algorithms(False)  # DETERMINISTIC True in an in-process engine run must not leak


@pytest.fixture(autouse=True)
def _restore_dataset_options():
    """An in-process run's setup fixes the dataset options (DATASETS.VG.*, DATASETS.AG.*) for the process; put the
    defaults back after each test so that no test sees another's."""
    yield
    from sgg.data.catalog import DatasetCatalog

    DatasetCatalog.reset_options()
