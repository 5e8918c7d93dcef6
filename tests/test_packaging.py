"""Packaging: the core never imports a framework; built-in specs ship in the wheel;
backends are found through entry points."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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
    with pytest.raises(specgraph.BackendError, match="max_level=6 but the plan has 7"):
        specgraph.compile(plan, backend="null", max_level=6)
    with pytest.raises(specgraph.BackendError, match="variant='49' but the plan has '49S'"):
        specgraph.compile(plan, backend="null", variant="49")
    assert specgraph.compile(plan, backend="null", min_level=3, max_level=7).plan is plan
