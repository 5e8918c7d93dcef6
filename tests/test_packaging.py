"""Packaging: the core never imports a framework; built-in specs ship in the wheel;
backends are found through entry points."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

import specgraph

ROOT = Path(__file__).resolve().parent.parent


def test_core_imports_no_framework() -> None:
    code = (
        "import sys, specgraph\n"
        "p = specgraph.plan(specgraph.load('spinenet'), '49', 640)\n"
        "specgraph.stats(p); specgraph.compile(p, backend='null')((1, 3, 640, 640))\n"
        "frameworks = ('torch', 'tensorflow', 'tf_keras', 'keras', 'jax')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in frameworks)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_null_backend_through_entry_point() -> None:
    assert "null" in specgraph.available_backends()
    model = specgraph.compile("spinenet", backend="null", variant="49S", input_size=(256, 384))
    assert model((2, 3, 256, 384))["7"] == (2, 128, 2, 3)


def test_missing_backend_names_the_package() -> None:
    with pytest.raises(specgraph.BackendError, match=r"no installed package provides entry point 'nonesuch'"):
        specgraph.get_backend("nonesuch")
    if "torch" not in specgraph.available_backends():
        with pytest.raises(specgraph.BackendError, match="pip install specgraph-torch"):
            specgraph.get_backend("torch")


@pytest.mark.slow
def test_builtin_specs_load_by_name_after_a_non_editable_install(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, timeout=600)
    wheel = next(wheels.glob("specgraph-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "specgraph/specs/spinenet.toml" in names and "specgraph/specs/spinenet_mobile.toml" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, timeout=600)
    code = (
        "import specgraph, sys\n"
        f"assert specgraph.__file__.startswith({str(target)!r}), specgraph.__file__\n"
        "print(sorted(specgraph.builtin_specs()))\n"
        "print(specgraph.stats(specgraph.plan(specgraph.load('spinenet_mobile'), '49', 384)).params)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "'spinenet', 'spinenet_lite', 'spinenet_mobile'" in out
    assert out.strip().endswith("2313892")


def test_compile_checks_a_plan_against_the_levels_given() -> None:
    plan = specgraph.plan(specgraph.load("spinenet"), "49S", 128)
    with pytest.raises(specgraph.BackendError, match=r"max_level=6 does not match the plan's max_level=7"):
        specgraph.compile(plan, backend="null", max_level=6)
    with pytest.raises(specgraph.BackendError, match=r"variant='49' does not match the plan's variant='49S'"):
        specgraph.compile(plan, backend="null", variant="49")
    expected = r"levels=\[3, 5\] does not match the plan's levels \[3, 4, 5, 6, 7\]"
    with pytest.raises(specgraph.BackendError, match=expected):
        specgraph.compile(plan, backend="null", levels=[3, 5])
    assert specgraph.compile(plan, backend="null", min_level=3, max_level=7).plan is plan


def _imports(package: Path) -> tuple[set[str], set[str]]:
    """Top-level names a package imports: (when the package is imported, only later).

    "Later" is inside functions, under ``try`` (guarded, so optional) and in submodules the
    package's ``__init__`` does not load (e.g. ``specgraph.testing``, which needs the test extra).
    """
    modules: dict[str, tuple[set[str], set[str], set[str]]] = {}  # module -> (eager, lazy, own submodules)

    def visit(nodes: list[ast.stmt], deferred: bool, found: tuple[set[str], set[str], set[str]]) -> None:
        eager, lazy, own = found
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.level:
                if not deferred:  # a relative import at import time loads that submodule
                    own.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                (lazy if deferred else eager).update(n.split(".")[0] for n in names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body, True, found)
            elif isinstance(node, ast.Try):
                visit(node.body, True, found)
                for part in (node.handlers, node.orelse, node.finalbody):
                    visit(part, deferred, found)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [], deferred, found)

    for path in package.glob("*.py"):
        modules[path.stem] = (set(), set(), set())
        visit(ast.parse(path.read_text()).body, False, modules[path.stem])
    loaded, todo = set(), ["__init__"]
    while todo:
        name = todo.pop()
        if name in modules and name not in loaded:
            loaded.add(name)
            todo.extend(modules[name][2])
    eager = set().union(*(modules[m][0] for m in loaded))
    lazy = set().union(*(modules[m][0] | modules[m][1] for m in modules)) - eager
    return eager, lazy


@pytest.mark.parametrize("project", [".", "backends/torch", "backends/tensorflow"])
def test_every_import_is_a_declared_dependency(project: str) -> None:
    """What ``import <package>`` imports is in ``dependencies``; what the package imports later
    is in ``dependencies`` or an extra. (`make demo` once failed on a fresh machine over numpy.)"""
    meta = tomllib.loads((ROOT / project / "pyproject.toml").read_text())["project"]
    own = meta["name"].replace("-", "_")

    def dist(requirement: str) -> str:
        return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    required = {dist(r) for r in meta["dependencies"]}
    extras = {dist(r) for reqs in meta.get("optional-dependencies", {}).values() for r in reqs}
    providers = importlib.metadata.packages_distributions()
    eager, lazy = _imports(ROOT / project / own)
    for names, allowed, kind in ((eager, required, "dependencies"), (lazy, required | extras, "extras")):
        for name in sorted(names - set(sys.stdlib_module_names) - {own, "__future__"}):
            # not installed here (e.g. tomli, for Python < 3.11 only): then its own name must be declared
            dists = {d.lower().replace("_", "-") for d in providers.get(name, [name])}
            assert dists & allowed, f"{project}: imports {name!r} ({', '.join(sorted(dists))}), not in its {kind}"
