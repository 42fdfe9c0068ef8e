"""Package layering, read from the import statements (ast, so comments and docstrings do not count; imports inside
functions do): models never import the engine, data never imports models, and the SSv2 demo-data module imports
neither models nor evaluation."""

import ast
import os
from typing import Iterator, List

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_files(path: str) -> List[str]:
    if os.path.isfile(path):
        return [path]
    return sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files if f.endswith(".py"))


def imported_modules(path: str, root: str = REPO) -> Iterator[str]:
    """Absolute names of the modules every ``import`` / ``from ... import`` statement of ``path`` (a file under
    ``root``) reaches; relative imports are resolved against the file's package."""
    package = os.path.relpath(path, root).split(os.sep)[:-1]
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)  # `from sgg import engine`


def _offenders(path: str, forbidden: tuple) -> List[str]:
    found = []
    for file in _python_files(os.path.join(REPO, path)):
        for name in imported_modules(file):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{os.path.relpath(file, REPO)}: {name}")
    return found


@pytest.mark.parametrize("path, forbidden", [
    ("sgg/modeling", ("sgg.engine",)),
    ("sgg/data", ("sgg.modeling",)),
    ("sgg/data/demo/ssv2_demo.py", ("sgg.modeling", "sgg.evaluation")),
])
def test_package_does_not_import(path, forbidden):
    assert _offenders(path, forbidden) == []


def test_relative_and_function_level_imports_count_and_text_does_not(tmp_path):
    folder = tmp_path / "sgg" / "modeling" / "meta_arch"
    folder.mkdir(parents=True)
    (folder / "text.py").write_text('"""Never `import sgg.engine` here."""\n# from sgg.engine import hooks\nX = 1\n')
    (folder / "code.py").write_text("def f():\n    from ...engine.hooks import HookBase\n    from sgg import engine\n")
    assert list(imported_modules(str(folder / "text.py"), root=str(tmp_path))) == []
    assert {"sgg.engine.hooks", "sgg.engine"} <= set(imported_modules(str(folder / "code.py"), root=str(tmp_path)))
