"""The layer rules of docs/engine.md ("Layout"), checked from the import statements themselves (ast, not text)."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SGG = os.path.join(REPO, "sgg")


def _python_files(folder):
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(root, name)


def _module_name(path, repo):
    rel = os.path.relpath(path, repo)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path, repo=REPO):
    """(imported module, line, inside a function) for every import of ``path``, relative ones resolved."""
    tree = ast.parse(open(path).read(), filename=path)
    name = _module_name(path, repo)
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                found.append((module, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _violations(folder, forbidden_prefixes):
    bad = []
    for path in _python_files(folder):
        for module, line, _ in _imports(path):
            if any(module == p or module.startswith(p + ".") for p in forbidden_prefixes):
                bad.append(f"{os.path.relpath(path, REPO)}:{line} imports {module}")
    return bad


def test_no_model_knows_the_trainer():
    assert _violations(os.path.join(SGG, "modeling"), ["sgg.engine"]) == []


def test_data_knows_no_model_and_no_metric():
    assert _violations(os.path.join(SGG, "data"), ["sgg.modeling", "sgg.evaluation", "sgg.engine"]) == []


def test_evaluation_knows_no_model_and_no_trainer():
    assert _violations(os.path.join(SGG, "evaluation"), ["sgg.modeling", "sgg.engine"]) == []


@pytest.mark.parametrize("layer,above", [
    ("checkpoint", ["sgg.engine", "sgg.modeling", "sgg.data", "sgg.evaluation"]),
    ("solver", ["sgg.engine", "sgg.modeling", "sgg.data", "sgg.evaluation"]),
    ("config", ["sgg.engine", "sgg.modeling", "sgg.data", "sgg.evaluation", "sgg.checkpoint", "sgg.solver"]),
    ("structures", ["sgg.engine", "sgg.modeling", "sgg.data", "sgg.evaluation", "sgg.checkpoint", "sgg.solver"]),
    ("utils", ["sgg.engine", "sgg.modeling", "sgg.data", "sgg.evaluation", "sgg.checkpoint", "sgg.solver"]),
    ("model_zoo", ["sgg.engine", "sgg.modeling", "sgg.data", "sgg.evaluation", "sgg.checkpoint", "sgg.solver",
                   "sgg.config", "sgg.structures", "sgg.utils"]),
])
def test_lower_layers_import_nothing_above(layer, above):
    assert _violations(os.path.join(SGG, layer), above) == []


def test_export_sits_above_modeling_and_nothing_below_imports_it():
    """sgg/export may use modeling, checkpoint, config, structures and utils, never the engine, data or evaluation
    (tools feed it inputs and score it); no other sgg package imports sgg.export."""
    assert _violations(os.path.join(SGG, "export"), ["sgg.engine", "sgg.data", "sgg.evaluation"]) == []
    below = [d for d in os.listdir(SGG) if os.path.isdir(os.path.join(SGG, d)) and d not in ("export", "__pycache__")]
    assert sum((_violations(os.path.join(SGG, d), ["sgg.export"]) for d in below), []) == []


def test_the_library_never_imports_tools():
    assert _violations(SGG, ["tools", "sgg_tools"]) == []


def test_no_function_local_import_of_sgg_in_the_library():
    """Imports of sgg's own modules are at module level: a local one would only dodge an import circle."""
    bad = [f"{os.path.relpath(path, REPO)}:{line} imports {module} inside a function"
           for path in _python_files(SGG) for module, line, local in _imports(path)
           if local and (module == "sgg" or module.startswith("sgg."))]
    assert bad == []


def test_the_checker_sees_relative_and_local_imports(tmp_path):
    pkg = tmp_path / "sgg" / "data"
    pkg.mkdir(parents=True)
    f = pkg / "x.py"
    f.write_text("from ..modeling import thing\n\ndef g():\n    from sgg.engine import y\n")
    assert [(m, local) for m, _, local in _imports(str(f), str(tmp_path))] == [("sgg.modeling", False),
                                                                                ("sgg.engine", True)]
