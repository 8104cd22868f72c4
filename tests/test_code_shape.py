"""The package's shape (issue 16): functions fit on a screen, no module reaches into another's
private names, the NumPy engine and the data look-up load no TensorFlow; the package does not
reach into ../shared/peers (the development tools that run the peers live in benchmarks/, issue 18)."""

import ast
import re
import subprocess
import sys

from .conftest import REPO

PACKAGE = REPO / "lenet_keras"
BENCHMARKS = REPO / "benchmarks"
"""The repository's development tools (not installed); held to the same shape as the package."""
SOURCES = (PACKAGE, BENCHMARKS)
MAX_LINES = 60
"""Lines of code of one function (docstring, blank and comment lines not counted)."""


def _code_lines(node: ast.AST, source_lines: list[str]) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        skip = set(range(body[0].lineno, body[0].end_lineno + 1))
    else:
        skip = set()
    lines = range(node.lineno, node.end_lineno + 1)
    return sum(1 for n in lines if n not in skip and source_lines[n - 1].strip()
               and not source_lines[n - 1].strip().startswith("#"))


def function_lengths():
    """(path:qualified name, lines of code) of every function and method in lenet_keras/ and benchmarks/."""
    for path in sorted(p for folder in SOURCES for p in folder.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(REPO)}:{node.name}", _code_lines(node, lines)


def test_every_function_fits_on_a_screen():
    long = sorted((length, name) for name, length in function_lengths() if length > MAX_LINES)
    assert not long, f"functions over {MAX_LINES} lines of code: {long}"


def private_imports():
    """`from lenet_keras.x import _name` and `alias._name` uses where alias is a lenet_keras module."""
    found = []
    for path in sorted(p for folder in SOURCES for p in folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lenet_keras"):
                for name in node.names:
                    if name.name.startswith("_"):
                        found.append(f"{path.name}: from {node.module} import {name.name}")
                    if node.module == "lenet_keras":
                        aliases.add(name.asname or name.name)
            elif isinstance(node, ast.Import):
                aliases |= {a.asname or a.name for a in node.names if a.name.startswith("lenet_keras")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_another():
    assert private_imports() == []


def test_the_numpy_engine_and_data_look_up_load_no_tensorflow():
    code = ("import sys, lenet_keras.scratch.train, lenet_keras.data, lenet_keras.dataformats, lenet_keras.pipeline, "
            "lenet_keras.rundir; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
            "[m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')][:5]")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


SHARED_PATH = re.compile(r"\.\./shared|shared/peers|[\"']shared[\"']")
"""A path to ../shared or its peers: `../shared`, `shared/peers`, or "shared" as a path part (`/ "shared" /`)."""


def test_the_package_does_not_reach_into_shared_peers():
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}" for path in sorted(PACKAGE.rglob("*"))
             if path.suffix in (".py", ".toml") for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if SHARED_PATH.search(line)]
    assert found == [], "the peers are run by benchmarks/, not by the package:\n" + "\n".join(found)
    assert SHARED_PATH.search((BENCHMARKS / "bench_peers.py").read_text())  # the pattern does catch the tools' paths


def test_the_development_tools_run_from_the_repository_root():
    for module in ("benchmarks.airbench_compare", "benchmarks.crash_drill", "benchmarks.bench_peers"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0 and f"python -m {module}" in result.stdout, (module, result.stderr[-2000:])
