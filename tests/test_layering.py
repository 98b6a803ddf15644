"""The layers the README states, checked on the source: rnnx.training builds on the core only (flax.nnx objects
reach its checkpoints through rnnx.nnx_state), and each module of rnnx.training and rnnx.apps states its one
job in a docstring and stays within about 300 lines."""

import ast
import pathlib

import pytest

import rnnx

PACKAGE = pathlib.Path(rnnx.__file__).parent
MAX_LINES = 300


def _modules(*packages: str) -> list[pathlib.Path]:
    return sorted(path for package in packages for path in (PACKAGE / package).glob("*.py"))


def _imported(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function; ``from a import b`` counts as ``a.b``
    (``b`` may be a module), a relative import as its dots."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.ImportFrom):
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", _modules("training"), ids=lambda path: path.name)
def test_training_imports_only_the_core(path):
    imported = _imported(path)
    above = sorted(n for n in imported if n.split(".")[0] == "rnnx" and n.split(".")[1] not in ("core", "training"))
    assert not above, f"rnnx/training/{path.name} imports {above}: training builds on rnnx.core only"
    foreign = sorted(n for n in imported if n.startswith(("flax", ".")))
    assert not foreign, f"rnnx/training/{path.name} imports {foreign}"


def test_the_import_scan_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from rnnx.nn import Recurrent\n    from rnnx import nn\n")
    assert {"rnnx.nn.Recurrent", "rnnx.nn"} <= _imported(module)


@pytest.mark.parametrize("path", _modules("training", "apps"), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_a_module_states_its_one_job_in_about_300_lines(path):
    source = path.read_text()
    assert ast.get_docstring(ast.parse(source)), f"{path} has no module docstring stating its job"
    lines = len(source.splitlines())
    assert lines <= MAX_LINES, f"{path} has {lines} lines: more than one job? split it by concern"
