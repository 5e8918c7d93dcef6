"""Standalone TensorFlow source: emitted, imported in a fresh interpreter, same weights, same outputs."""

from __future__ import annotations

import inspect
import json
import keyword
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import specgraph_tensorflow as sgt
import tensorflow as tf

import specgraph
from specgraph._codegen import emit
from specgraph.testing import imported_modules

FRAMEWORK = {"tensorflow", "tf_keras"}

RUN_EMITTED = """
import importlib.util, json, sys
import numpy as np  # the test script may use numpy; the emitted module may not
import tensorflow as tf
config = json.loads(sys.argv[3])
tf.config.threading.set_intra_op_parallelism_threads(config["intra"])
tf.config.threading.set_inter_op_parallelism_threads(config["inter"])
spec = importlib.util.spec_from_file_location("emitted_model", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert not {"specgraph", "specgraph_tensorflow", "numpy"} & set(module.__dict__), "emitted module imports too much"
assert "specgraph" not in sys.modules and "specgraph_tensorflow" not in sys.modules
model = module.build_model()
assert [w.name for w in model.weights] == config["names"], "weight names or order differ"
with np.load(sys.argv[2]) as saved:
    model.set_weights([saved[f"w{i}"] for i in range(len(config["names"]))])
    out = model(saved["images"], training=False)
    deltas = {k: float(np.abs(out[k].numpy() - saved["out" + k]).max()) for k in config["levels"]}
print(json.dumps(deltas))
"""


LOAD_NPZ = """
import importlib.util, json, sys
import numpy as np  # the test script may use numpy; the emitted module may not
import tensorflow as tf
config = json.loads(sys.argv[2])
tf.config.threading.set_intra_op_parallelism_threads(config["intra"])
tf.config.threading.set_inter_op_parallelism_threads(config["inter"])
spec = importlib.util.spec_from_file_location("emitted_model", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert "specgraph" not in sys.modules and "specgraph_tensorflow" not in sys.modules
model = module.build_model()
names = module.weights_dict(model)
assert sorted(names) == sorted(config["names"]), "structural names differ from the backend's"
module.load_npz(model, config["good"])
with np.load(config["reference"]) as saved:
    images, want = saved["images"], {k: saved["out" + k] for k in config["levels"]}
def deltas():
    out = model(images, training=False)
    return {k: float(np.abs(out[k].numpy() - want[k]).max()) for k in config["levels"]}
report = {"deltas": deltas(), "refused": {}}
before = [v.numpy().copy() for v in model.weights]
for case, path in config["bad"].items():
    try:
        module.load_npz(model, path)
    except module.WeightsError as exc:
        unchanged = all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.weights, strict=True))
        report["refused"][case] = {"message": str(exc), "problems": exc.problems, "unchanged": unchanged}
    else:
        report["refused"][case] = None
report["deltas_after"] = deltas()
print(json.dumps(report))
"""


def _check_imports(source: str) -> None:
    roots = {name.split(".")[0] for name in imported_modules(source)}
    assert "tensorflow" in roots and "tf_keras" in roots
    assert roots <= FRAMEWORK | set(sys.stdlib_module_names), roots
    assert not roots & {"numpy", "specgraph", "specgraph_tensorflow"}


def _randomise(model: Any, seed: int) -> None:
    """Non-trivial BN statistics, affine parameters, biases and fusion weights (kernels stay random)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        name = v.name
        if "moving_mean" in name or "beta" in name or "bias" in name:
            a = rng.normal(0.0, 0.1, v.shape)
        elif "moving_variance" in name or "gamma" in name or name.endswith("/weights:0"):
            a = rng.uniform(0.5, 1.5, v.shape)
        else:
            continue
        v.assign(a.astype(np.float32))


@pytest.mark.slow
@pytest.mark.parametrize(("family", "variant"), [("spinenet", "49S"), ("spinenet_mobile", "49XS")])
def test_emitted_model_equals_compiled_model(tmp_path: Path, family: str, variant: str) -> None:
    plan = specgraph.plan(specgraph.load(family), variant, (128, 192))
    source = emit(plan, "tensorflow")
    _check_imports(source)
    for field in (plan.spec_name, f"variant:    {variant}", plan.hash, specgraph.__version__):
        assert field in source.split('"""')[1]
    model = specgraph.compile(plan, backend="tensorflow")
    _randomise(model, seed=3)
    images = np.random.default_rng(0).normal(0.0, 1.0, (2, 128, 192, 3)).astype(np.float32)
    outputs = {k: v.numpy() for k, v in model(images, training=False).items()}
    file = tmp_path / "model.py"
    file.write_text(source)
    np.savez(tmp_path / "saved.npz", images=images, **{f"w{i}": w for i, w in enumerate(model.get_weights())},
             **{f"out{k}": v for k, v in outputs.items()})
    # The same thread counts in both processes (this one's, as TensorFlow runs here): the same kernels.
    config = {"names": [w.name for w in model.weights], "levels": sorted(outputs),
              "intra": tf.config.threading.get_intra_op_parallelism_threads(),
              "inter": tf.config.threading.get_inter_op_parallelism_threads()}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", RUN_EMITTED, str(file), str(tmp_path / "saved.npz"),
                             json.dumps(config)], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    deltas = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"{family} {variant}: max |delta| per level {deltas}")
    assert set(deltas) == {"3", "4", "5", "6", "7"}
    assert max(deltas.values()) <= 1e-6, deltas


@pytest.mark.slow
def test_emitted_module_loads_the_backends_npz_by_name(tmp_path: Path) -> None:
    """``load_npz`` in the emitted file reads ``specgraph_tensorflow.export_npz``'s names (no mapping, no
    weight order) in a fresh interpreter; a wrong file is refused whole, naming each problem."""
    plan = specgraph.plan(specgraph.load("spinenet_mobile"), "49XS", (128, 128))  # depthwise, SE, mbconv units
    file = tmp_path / "model.py"
    file.write_text(emit(plan, "tensorflow"))
    model = specgraph.compile(plan, backend="tensorflow")
    _randomise(model, seed=7)
    images = np.random.default_rng(5).normal(0.0, 1.0, (2, 128, 128, 3)).astype(np.float32)
    outputs = {k: v.numpy() for k, v in model(images, training=False).items()}
    np.savez(tmp_path / "reference.npz", images=images, **{f"out{k}": v for k, v in outputs.items()})
    sgt.export_npz(model, tmp_path / "good.npz")
    good = {k: v.numpy() for k, v in sgt.weights_dict(model).items()}
    shape = list(good["sp1/in0/op0/kernel"].shape)
    bad = {
        "missing": {k: v for k, v in good.items() if k != "stem/op0/kernel"},
        "wrong_shape": {**good, "sp1/in0/op0/kernel": np.concatenate([good["sp1/in0/op0/kernel"]] * 2, axis=-1)},
        "unexpected": {**good, "sp99/op0/kernel": np.zeros(3, np.float32)},
        "nan": {**good, "endpoint_3/op0/gamma": np.full_like(good["endpoint_3/op0/gamma"], np.nan)},
    }
    paths = {}
    for case, arrays in bad.items():
        paths[case] = str(tmp_path / f"{case}.npz")
        np.savez(paths[case], **arrays)
    paths["not_npz"] = str(tmp_path / "not.npz")
    Path(paths["not_npz"]).write_text("not a zip file")
    config = {"names": sorted(good), "levels": sorted(outputs), "good": str(tmp_path / "good.npz"),
              "reference": str(tmp_path / "reference.npz"), "bad": paths,
              "intra": tf.config.threading.get_intra_op_parallelism_threads(),
              "inter": tf.config.threading.get_inter_op_parallelism_threads()}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", LOAD_NPZ, str(file), json.dumps(config)], capture_output=True,
                            text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"load_npz 49XS: max |delta| per level {report['deltas']}")
    assert set(report["deltas"]) == {"3", "4", "5", "6", "7"}
    assert max(report["deltas"].values()) == 0.0, report["deltas"]  # same kernels, same weights: bitwise
    assert report["deltas_after"] == report["deltas"]  # the refused loads changed nothing
    refused = report["refused"]
    assert all(refused[case] is not None and refused[case]["unchanged"] for case in paths), refused
    expected = {
        "missing": f"stem/op0/kernel: missing (expected shape {list(good['stem/op0/kernel'].shape)})",
        "wrong_shape": f"sp1/in0/op0/kernel: shape {[*shape[:-1], 2 * shape[-1]]} in the file, {shape} in the model",
        "unexpected": "sp99/op0/kernel: unexpected (not a weight of this model)",
        "nan": "endpoint_3/op0/gamma: holds NaN or inf",
    }
    for case, problem in expected.items():
        assert refused[case]["problems"] == [problem] or refused[case]["problems"][0].startswith(problem), refused[case]
        assert refused[case]["message"].startswith(f"{paths[case]}: 1 problem(s), nothing loaded:"), refused[case]
    assert "cannot read the file" in refused["not_npz"]["message"]


def test_emitted_weight_naming_is_the_backends_own_source(mini) -> None:
    """The role part of the names is the backend's code copied from its source, not a second hand-written
    rule; the slot table names every slot of the compiled model, weighted fusion included."""
    from specgraph_tensorflow._layers import ConvNormAct
    from specgraph_tensorflow._units import BlockUnit, SqueezeExcite
    from specgraph_tensorflow.weights import _layer_variables

    data = mini()
    data["fusion"] = {"method": "weighted"}
    plan = specgraph.plan(specgraph.load(data), input_size=64)
    source = emit(plan, "tensorflow")
    for function in (_layer_variables, ConvNormAct.named_variables, SqueezeExcite.named_variables,
                     BlockUnit.named_layers):
        assert inspect.getsource(function) in source, function.__qualname__
    namespace: dict = {}
    exec(compile(source, "emitted.py", "exec"), namespace)
    model = specgraph.compile(plan, backend="tensorflow")
    assert list(namespace["SLOTS"]) == list(model.slots)
    assert namespace["SLOTS"] == {key: layer.name for key, layer in model.slots.items()}


# "a<b&c" and "a>b&c" sanitise to the same layer name, which "a_b_c" already is.
HOSTILE = ["</text><script>", "a<b&c", 'q"uote', "</svg>", "${x}", "class", "1st", "a>b&c", "a_b_c", "tf"]
TF_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.-]*")


def test_hostile_names_become_safe_identifiers_and_layer_names(mini, tmp_path: Path) -> None:
    data = mini()
    data["fusion"] = {"method": "weighted", "activation": True}
    renames = dict(zip(["b1", "b2", "b3", "b4", "b5", "o3", "o4", "o5", "o6", "o7"], HOSTILE, strict=True))
    renames["s1"] = "build_model"
    text = json.dumps(data)
    for old, new in sorted(renames.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f'"{old}"', json.dumps(new))
    plan = specgraph.plan(specgraph.load(json.loads(text)), input_size=64)
    source = emit(plan, "tensorflow")
    _check_imports(source)
    namespace: dict = {}
    exec(compile(source, "emitted.py", "exec"), namespace)
    idents = namespace["SPEC_NAMES"]
    assert set(idents.values()) == {node.name for node in plan.nodes} >= set(renames.values())
    assert all(ident.isidentifier() and not keyword.iskeyword(ident) for ident in idents)
    assert len(set(idents)) == len(idents)
    assert callable(namespace["build_model"]) and "build_model" not in idents
    prefixes = namespace["LAYER_NAMES"]
    assert set(prefixes) == {node.name for node in plan.nodes}
    assert all(TF_NAME.fullmatch(p) for p in prefixes.values()) and len(set(prefixes.values())) == len(prefixes)
    assert prefixes["a_b_c"] == "a_b_c" and {prefixes["a<b&c"], prefixes["a>b&c"]} == {"a_b_c_2", "a_b_c_3"}

    model = specgraph.compile(plan, backend="tensorflow")
    _randomise(model, seed=4)
    emitted = namespace["build_model"]()
    assert [layer.name for layer in emitted.layers] == [layer.name for layer in model.layers]
    assert [(w.name, tuple(w.shape)) for w in emitted.weights] == [(w.name, tuple(w.shape)) for w in model.weights]
    assert any(w.name.endswith("_fuse/weights:0") for w in emitted.weights)
    emitted.set_weights(model.get_weights())
    x = np.random.default_rng(1).normal(0.0, 1.0, (1, 64, 64, 3)).astype(np.float32)
    a, b = model(x, training=False), emitted(x, training=False)
    assert set(a) == set(b) == {"3", "4", "5", "6", "7"}
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)

    # By name too: the backend's .npz (hostile node names, sanitised layer names, fusion weights) loads.
    assert sorted(namespace["weights_dict"](emitted)) == sorted(sgt.weights_dict(model))
    fresh = namespace["build_model"]()
    sgt.export_npz(model, tmp_path / "w.npz")
    namespace["load_npz"](fresh, tmp_path / "w.npz")
    c = fresh(x, training=False)
    assert all(np.array_equal(a[k].numpy(), c[k].numpy()) for k in a)


@pytest.mark.slow
def test_cli_emits_tensorflow_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "model.py"
    cmd = [sys.executable, "-m", "specgraph.cli", "emit", "spinenet_mobile", "-v", "49XS", "--backend", "tensorflow",
           "-o", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr
    source = out.read_text()
    _check_imports(source)
    assert "def build_model(" in source and "spinenet_mobile" in source
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 2 and "--force" in again.stderr and out.read_text() == source


def test_emitted_model_under_xla_uses_shifted_depthwise_convs() -> None:
    """Like the backend, the emitted file computes depthwise convs as shifted multiply-adds when
    traced for XLA (XLA's CPU depthwise conv is ~10x slower); same function as the compiled model."""
    plan = specgraph.plan(specgraph.load("spinenet_mobile"), "49XS", (128, 192))
    namespace: dict = {}
    exec(compile(emit(plan, "tensorflow"), "emitted.py", "exec"), namespace)
    emitted = namespace["build_model"]()
    model = specgraph.compile(plan, backend="tensorflow")
    _randomise(model, seed=6)
    emitted.set_weights(model.get_weights())
    x = tf.constant(np.random.default_rng(2).normal(0.0, 1.0, (1, 97, 130, 3)).astype(np.float32))  # odd sizes
    fast = tf.function(lambda t: emitted(t, training=False), jit_compile=True)
    plain = tf.function(lambda t: emitted(t, training=False))
    ops = {name: {op.type for op in fn.get_concrete_function(x).graph.get_operations()}
           for name, fn in (("xla", fast), ("plain", plain))}
    assert "DepthwiseConv2dNative" not in ops["xla"] and "DepthwiseConv2dNative" in ops["plain"]
    out, ref = fast(x), model(x, training=False)
    for level in ref:
        scale = np.abs(ref[level].numpy()).max()
        assert scale > 0 and np.abs(out[level].numpy() - ref[level].numpy()).max() / scale <= 1e-4, level


def _keras_expected_std(name: str, shape: tuple[int, ...]) -> tuple[str, float]:
    """(kind, std) of a fresh kernel, from Keras's definitions by hand: VarianceScaling gives std
    sqrt(1 / fan_in) (its truncated normal is rescaled); glorot-uniform (Model Garden's Mobile
    resampling depthwise kernels) std sqrt(2 / (fan_in + fan_out)). Fans of [kh, kw, in, out]:
    kh kw in and kh kw out (a depthwise [kh, kw, C, 1]: kh kw C and kh kw)."""
    kh, kw, cin, cout = shape
    fan_in, fan_out = kh * kw * cin, kh * kw * cout
    depthwise = cout == 1 and kh > 1
    if "/in" in name and depthwise:
        return "resampling depthwise", (2.0 / (fan_in + fan_out)) ** 0.5
    kind = "depthwise" if depthwise else "squeeze-excitation" if "/se/" in name else "conv"
    return kind, (1.0 / fan_in) ** 0.5


def test_emitted_model_starts_from_the_compiled_models_distribution():
    """Per kernel kind, the emitted model's fresh kernels have the std Keras's fans give, as the compiled's."""
    plan = specgraph.plan(specgraph.load("spinenet_mobile"), "49XS", (64, 64))
    source = emit(plan, "tensorflow")
    namespace: dict[str, Any] = {"__name__": "emitted"}
    exec(compile(source, "emitted.py", "exec"), namespace)
    emitted = namespace["weights_dict"](namespace["build_model"]())
    compiled = sgt.weights_dict(sgt.compile(plan))
    assert set(emitted) == set(compiled)
    pooled: dict[tuple[str, str], list[np.ndarray]] = {}
    for name in compiled:
        if not name.endswith("/kernel"):
            continue
        kind, std = _keras_expected_std(name, tuple(compiled[name].shape))
        for which, weights in (("emitted", emitted), ("compiled", compiled)):
            pooled.setdefault((which, kind), []).append(weights[name].numpy().ravel() / std)
    assert {kind for _, kind in pooled} == {"conv", "depthwise", "squeeze-excitation", "resampling depthwise"}
    for key, parts in pooled.items():
        values = np.concatenate(parts)
        assert values.size >= 1000, key
        assert abs(float(values.std()) - 1.0) < 0.05, (key, float(values.std()))


def test_emitted_model_runs_shared_cell_weights_once() -> None:
    """tests/data/shared_cells.toml: the emitted model holds one set of weights per shared block, as the backend's
    model does (same names, same count), and gives the same outputs."""
    plan = specgraph.plan(specgraph.load(Path(__file__).parents[1] / "data" / "shared_cells.toml"),
                          input_size=(64, 96))
    source = emit(plan, "tensorflow")
    _check_imports(source)
    model = specgraph.compile(plan, backend="tensorflow")
    _randomise(model, seed=5)
    emitted = sgt.emitted_model(source, model)
    assert [w.name for w in emitted.weights] == [w.name for w in model.weights]
    assert emitted.count_params() == model.count_params() == specgraph.stats(plan).params
    images = np.random.default_rng(0).normal(0.0, 1.0, (2, 64, 96, 3)).astype(np.float32)
    want, got = model(images, training=False), emitted(images, training=False)
    assert max(float(np.abs(got[k].numpy() - want[k].numpy()).max()) for k in want) <= 1e-6
