"""A tiny random local LLM folder for the SceneLLM tests, written once per test process by tools/make_tiny_llm.py."""

import atexit
import functools
import importlib.util
import os
import shutil
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location("sgg_tools_make_tiny_llm", os.path.join(REPO, "tools",
                                                                                          "make_tiny_llm.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_tiny_llm_tool = _tool()


@functools.lru_cache(maxsize=None)
def tiny_llm_dir() -> str:
    """A 2-layer Llama, hidden 16, 2 heads (q/k/v/o projections), saved to a temporary folder (removed at exit)."""
    out = tempfile.mkdtemp(prefix="sgg_tiny_llm_")
    atexit.register(shutil.rmtree, out, True)
    return make_tiny_llm_tool.make_tiny_llm(out, seed=0, hidden_size=16, layers=2, heads=2, intermediate_size=32)
