"""Repository-root conftest: puts the repository root on sys.path (so ``tests.*`` helper modules import in spawned
worker processes too) and keeps torch to one thread per test process on small CI machines."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
