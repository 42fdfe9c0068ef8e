"""Import a script of ``tools/`` as a module (the tools are scripts, not a package)."""

import importlib.util
import os

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")


def load_tool(name: str):
    """A fresh module object for ``tools/<name>.py``."""
    spec = importlib.util.spec_from_file_location(f"sgg_tools_{name}", os.path.join(TOOLS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
