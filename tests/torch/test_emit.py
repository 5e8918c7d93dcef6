"""Standalone PyTorch source: emitted, imported in a fresh interpreter, same weights, same outputs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import specgraph
from specgraph._codegen import emit
from specgraph.cli import EXIT_UNAVAILABLE
from specgraph.testing import imported_modules

ALLOWED_IMPORTS = {"__future__", "math", "torch", "torch.nn", "torch.nn.functional"}

RUN_EMITTED = """
import importlib.util, json, sys, torch
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location("emitted_model", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert "specgraph" not in sys.modules and "specgraph_torch" not in sys.modules
saved = torch.load(sys.argv[2])
model = getattr(module, sys.argv[3])().eval()
model.load_state_dict(saved["state"])
with torch.no_grad():
    out = model(saved["images"])
print(json.dumps({k: float((out[k] - saved["outputs"][k]).abs().max()) for k in saved["outputs"]}))
"""


def _class_name(source: str) -> str:
    tree = ast.parse(source)
    return [n.name for n in tree.body if isinstance(n, ast.ClassDef)][-1]


def _randomise_norms(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


@pytest.mark.parametrize(("family", "variant"), [("spinenet", "49S"), ("spinenet_mobile", "49XS")])
def test_emitted_module_equals_compiled_model(tmp_path: Path, family: str, variant: str) -> None:
    plan = specgraph.plan(specgraph.load(family), variant, (128, 192))
    source = emit(plan, "torch")
    assert imported_modules(source) <= ALLOWED_IMPORTS
    for field in (plan.spec_name, f"variant:    {variant}", plan.hash, specgraph.__version__):
        assert field in source.split('"""')[1]
    model = specgraph.compile(plan, backend="torch").eval()
    _randomise_norms(model)
    images = torch.randn(2, 3, 128, 192)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels in both processes: equal to the last bit, not within noise
    try:
        with torch.no_grad():
            outputs = model(images)
    finally:
        torch.set_num_threads(threads)
    file = tmp_path / "model.py"
    file.write_text(source)
    torch.save({"state": model.state_dict(), "images": images, "outputs": outputs}, tmp_path / "saved.pt")
    result = subprocess.run([sys.executable, "-c", RUN_EMITTED, str(file), str(tmp_path / "saved.pt"),
                             _class_name(source)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    deltas = json.loads(result.stdout)
    assert set(deltas) == {"3", "4", "5", "6", "7"}
    assert max(deltas.values()) <= 1e-6, deltas


HOSTILE = ["</text><script>", "a<b&c", 'q"uote', "</svg>", "${x}", "class", "1st", "self", "nodes", "torch",
           "Block", "a-b", "a_b"]


def test_hostile_names_become_safe_identifiers(mini) -> None:
    data = mini()
    renames = dict(zip(["b1", "b2", "b3", "b4", "b5", "o3", "o4", "o5", "o6", "o7"], HOSTILE, strict=False))
    renames["s1"] = HOSTILE[-3]
    text = json.dumps(data)
    for old, new in sorted(renames.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f'"{old}"', json.dumps(new))
    spec = specgraph.load(json.loads(text))
    plan = specgraph.plan(spec, input_size=64)
    source = emit(plan, "torch")
    assert imported_modules(source) <= ALLOWED_IMPORTS
    namespace: dict = {}
    exec(compile(source, "emitted.py", "exec"), namespace)
    idents = namespace["SPEC_NAMES"]
    assert set(idents.values()) >= set(renames.values())
    assert all(ident.isidentifier() for ident in idents)
    assert len(set(idents)) == len(idents)
    model = specgraph.compile(plan, backend="torch").eval()
    emitted = namespace[_class_name(source)]().eval()
    emitted.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), emitted(x)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_emit_refuses_to_overwrite_and_leaves_nothing_on_error(tmp_path: Path) -> None:
    out = tmp_path / "model.py"
    cmd = [sys.executable, "-m", "specgraph.cli", "emit", "spinenet_mobile", "-v", "49XS", "-i", "128x128"]
    assert subprocess.run([*cmd, "-o", str(out)], capture_output=True, timeout=300).returncode == 0
    first = out.read_text()
    ast.parse(first)
    again = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--force" in again.stderr and out.read_text() == first
    forced = subprocess.run([*cmd, "-v", "49", "-o", str(out), "--force"], capture_output=True, timeout=300)
    assert forced.returncode == 0 and out.read_text() != first
    bad = tmp_path / "bad.py"
    failed = subprocess.run([*cmd, "--backend", "nonesuch", "-o", str(bad)], capture_output=True, text=True,
                            timeout=300)
    assert failed.returncode == EXIT_UNAVAILABLE and "Traceback" not in failed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.py"]


def _expected_std(key: str, shape: tuple[int, ...], resampling_depthwise: bool) -> float:
    """What Keras's initialisers give, from the weight's shape alone (hand formulas): VarianceScaling
    (fan-in, truncated normal rescaled to std sqrt(1 / fan_in)); glorot-uniform for the Mobile
    resampling depthwise kernels (limit sqrt(6 / (fan_in + fan_out)), std = limit / sqrt(3)).
    A depthwise kernel is [C, 1, k, k] here and [k, k, C, 1] in Keras: fan-in C k k, fan-out k k."""
    out_ch, in_per_group, kh, kw = shape
    depthwise = (in_per_group == 1 and ".depthwise." in key) or resampling_depthwise
    fan_in = out_ch * kh * kw if depthwise else in_per_group * kh * kw
    fan_out = kh * kw if depthwise else out_ch * kh * kw
    if resampling_depthwise:
        return (6.0 / (fan_in + fan_out)) ** 0.5 / 3**0.5
    return (1.0 / fan_in) ** 0.5


@pytest.mark.parametrize(("family", "variant"), [("spinenet", "49S"), ("spinenet_mobile", "49XS")])
def test_emitted_model_starts_from_the_compiled_models_distribution(family: str, variant: str) -> None:
    """Per conv kind (plain, depthwise, resampling depthwise, squeeze-excitation): the emitted model's
    fresh weights have the std Keras's fans give, like the compiled model's."""
    plan = specgraph.plan(specgraph.load(family), variant, (128, 128))
    source = emit(plan, "torch")
    namespace: dict = {}
    exec(compile(source, "emitted.py", "exec"), namespace)
    torch.manual_seed(0)
    emitted = namespace[_class_name(source)]()
    compiled = specgraph.compile(plan, backend="torch")
    compiled_state = compiled.state_dict()
    pooled: dict[tuple[str, str], list[torch.Tensor]] = {}  # (model, kind) -> weights / expected std
    for key, weight in emitted.state_dict().items():
        if weight.dim() != 4:
            continue
        resampling_depthwise = ".inputs." in key and weight.shape[1] == 1
        kind = ("resampling depthwise" if resampling_depthwise else "depthwise" if weight.shape[1] == 1
                else "squeeze-excitation" if ".se." in key else "conv")
        expected = _expected_std(key, tuple(weight.shape), resampling_depthwise)
        for name, w in (("emitted", weight), ("compiled", compiled_state[key])):
            pooled.setdefault((name, kind), []).append(w.flatten() / expected)
    kinds = {kind for _, kind in pooled}
    assert kinds >= ({"conv", "depthwise", "squeeze-excitation", "resampling depthwise"}
                     if family == "spinenet_mobile" else {"conv"})
    for (name, kind), parts in pooled.items():
        values = torch.cat(parts)
        assert values.numel() >= 1000, (name, kind)
        assert abs(float(values.std()) - 1.0) < 0.05, (name, kind, float(values.std()))
