"""Test helpers for this project's tests and for backend authors'.

``valid_specs()`` draws random valid spec dicts (every block type, resampling policy,
fusion method and the merge rule); ``specgraph.load`` accepts them as they are.
``imported_modules(source)`` lists what an emitted standalone model file imports.
The weights kit (``WEIGHT_CORRUPTIONS``, ``corrupt_weights``, ``unreadable_npz``,
``assert_weights_refused``) is what every backend's loader must refuse, the same cases
for each backend. ``BackendConformance`` is the suite every backend passes (subclass it in a
test module with ``backend = "name"``); ``ACTIVATION_REFERENCES`` are numpy versions of the
activations. Needs ``hypothesis`` and ``pytest`` (and numpy for the weights kit and the suite).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

__all__ = ["ACTIVATION_REFERENCES", "CONFORMANCE_CASES", "FUSION_REFERENCES", "TYPES", "UNREADABLE_NPZ",
           "WEIGHT_CORRUPTIONS", "WEIGHT_ROUTES", "BackendConformance", "assert_weights_refused", "corrupt_weights",
           "composed_specs", "decoder_specs", "imported_modules", "unreadable_npz", "valid_specs"]

TYPES = ["residual", "bottleneck", "mbconv"]


_OP_CHOICES = ["conv", "separable_conv", "norm", "act"]
_FUSIONS = ["sum", "weighted", "weighted_channel", "softmax", "concat"]  # attention needs two inputs


@st.composite
def _block_ops(draw: st.DrawFn, level: int) -> list[dict[str, Any]]:
    """A random op list for an op block at ``level`` (a decoder cell's node): convs, separable convs, norms,
    activations, at most one strided conv or max-pool (the block then fuses its inputs a level below)."""
    ops: list[dict[str, Any]] = []
    for kind in draw(st.lists(st.sampled_from(_OP_CHOICES), max_size=3)):
        op: dict[str, Any] = {"op": kind}
        if kind in ("conv", "separable_conv"):
            op.update(kernel=draw(st.sampled_from([1, 3])), bias=draw(st.booleans()))
        ops.append(op)
    if level >= 1 and draw(st.integers(0, 3)) == 0:
        strided = draw(st.sampled_from([{"op": "conv", "kernel": 3, "stride": 2}, {"op": "maxpool"}]))
        ops.insert(draw(st.integers(0, len(ops))), strided)
    return ops


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A random valid spec (plain data). Half are SpineNet-like (a short stem, body blocks give every
    endpoint), half stage-style (a stem chain of outputs at levels 3..5, as ResNet, with body blocks for
    levels 6 and 7, repeats per block and per variant, and endpoint convs or bare endpoints). A third of
    them have a random decoder: op blocks (random ops, their own widths) among the body blocks and as
    outputs, and half of those a repeated cell of op blocks (random fusion, attention too) that gives some
    endpoints."""
    filters = {lvl: draw(st.integers(4, 48)) for lvl in range(1, 8)}
    staged = draw(st.booleans())
    pool = staged or draw(st.booleans())
    stem_levels = [2, 3, 4, 5] if staged else [2] * draw(st.integers(1, 2)) if pool else [1, 2]
    stem = [{"name": f"s{i}", "level": lvl, "type": draw(st.sampled_from(TYPES))} for i, lvl in enumerate(stem_levels)]
    if staged:
        for block in stem:
            block["repeats"] = draw(st.integers(1, 2))
            block["output"] = block["level"] >= 3
    names = [b["name"] for b in stem]
    decoder = draw(st.integers(0, 2)) == 0

    def block(name: str, level: int, inputs: list[str]) -> dict[str, Any]:
        if decoder and draw(st.booleans()):
            fusions = [*_FUSIONS, "attention"] if len(inputs) > 1 else _FUSIONS
            return {"name": name, "level": level, "inputs": inputs, "filters": draw(st.integers(4, 32)),
                    "ops": draw(_block_ops(level)), "fusion": draw(st.sampled_from(fusions))}
        return {"name": name, "level": level, "type": draw(st.sampled_from(TYPES)), "inputs": inputs}

    blocks = []
    for i in range(draw(st.integers(0, 3 if staged else 10))):
        inputs = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        blocks.append(block(f"n{i}", draw(st.integers(1, 7)), inputs))
        names.append(f"n{i}")
    out_levels = draw(st.permutations([6, 7] if staged else list(range(3, 8))))
    for level in out_levels:
        inputs = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        blocks.append({**block(f"out{level}", level, inputs), "output": True})
        names.append(f"out{level}")
    cells = []
    if decoder and draw(st.booleans()):
        # A repeated cell on some output levels: it reads those blocks, and its last repetition gives the endpoints.
        levels = draw(st.lists(st.sampled_from(out_levels), min_size=1, max_size=3, unique=True))
        cell_blocks: list[dict[str, Any]] = []
        for level in levels:
            inputs = [f"out{level}", *draw(st.lists(st.sampled_from([b["name"] for b in cell_blocks] or
                                                                     [f"out{level}"]), max_size=1, unique=True))]
            inputs = list(dict.fromkeys(inputs))
            fusions = [*_FUSIONS, "attention"] if len(inputs) > 1 else _FUSIONS
            cell_blocks.append({"name": f"c{level}", "level": level, "inputs": inputs,
                                "filters": draw(st.integers(4, 32)), "ops": draw(_block_ops(level)),
                                "fusion": draw(st.sampled_from(fusions)), "output": True})
        for b in blocks:
            if b["name"] in {f"out{level}" for level in levels}:
                b["output"] = False
        cells.append({"name": "cell", "repeats": draw(st.integers(1, 3)), "inputs": [f"out{lv}" for lv in levels],
                      "outputs": [f"c{lv}" for lv in levels], "blocks": cell_blocks})
    variant = {
        "endpoints_num_filters": draw(st.integers(1, 64)),
        "filter_size_scale": draw(st.sampled_from([0.5, 0.65, 1.0, 1.3])),
        "resample_alpha": draw(st.sampled_from([0.5, 1.0])),
        "block_repeats": draw(st.integers(1, 2)),
        "expand_ratio": draw(st.sampled_from([1.0, 2.5, 6.0])),
        "se_ratio": draw(st.sampled_from([0.0, 0.25])),
    }
    if staged and draw(st.booleans()):
        variant["repeats"] = {draw(st.sampled_from(names)): draw(st.integers(1, 2))}
    spec = {
        "name": "random",
        "activation": draw(st.sampled_from(["relu", "swish"])),
        "filters": filters,
        "stem": {"conv": {"filters": draw(st.integers(4, 32)), "kernel": draw(st.sampled_from([3, 5, 7])),
                          "stride": 2, "scale_filters": draw(st.booleans())},
                 "pool": {"kernel": 3, "stride": 2} if pool else None,
                 "blocks": stem},
        "resample": {"squeeze": draw(st.booleans()),
                     "down": draw(st.sampled_from(["conv_maxpool", "depthwise", "conv"])),
                     "up": draw(st.sampled_from(["nearest", "bilinear"])),
                     "pool_kernel": draw(st.sampled_from(["stride", "stride+1"]))},
        "fusion": {"method": draw(st.sampled_from(["sum", "weighted"])),
                   "merge_unused_into_outputs": draw(st.booleans())},
        "variants": {"v": variant},
        "blocks": blocks,
    }
    if cells:
        spec["cells"] = cells
    if staged and draw(st.booleans()):
        spec["endpoints"] = {"conv": False}
        del variant["endpoints_num_filters"]
    return spec


def imported_modules(source: str) -> set[str]:
    """The modules a Python source imports (``import a.b`` -> ``a.b``; ``from m import x`` -> ``m``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


# ---------------------------------------------------------------- the weights kit


def _last(a: Any, value: float) -> Any:
    import numpy as np

    return np.where(np.arange(a.size).reshape(a.shape) == a.size - 1, value, a)


# kind -> how one array is replaced (None: its name is dropped from the source).
WEIGHT_CORRUPTIONS: dict[str, Callable[[Any], Any] | None] = {
    "object": lambda a: a.astype(object),
    "str": lambda a: a.astype(str),
    "bool": lambda a: a.astype(bool),
    "complex": lambda a: a.astype("complex64"),
    "nan": lambda a: _last(a, float("nan")),
    "inf": lambda a: a * 0 + float("inf"),
    "-inf": lambda a: _last(a, float("-inf")),
    "none": lambda a: None,
    "ragged": lambda a: [[1.0], [1.0, 2.0]],
    "shape": lambda a: a.reshape(-1)[:-1] if a.size > 1 else a.reshape(1, 1),
    "missing": None,
}
# (route, kind): a mapping may hold anything; an .npz only arrays (np.savez cannot store a ragged list).
WEIGHT_ROUTES = [(route, kind) for route in ("mapping", "npz") for kind in WEIGHT_CORRUPTIONS
                 if not (route == "npz" and kind == "ragged")]
UNREADABLE_NPZ = ("missing", "directory", "not-a-zip", "truncated")


def corrupt_weights(arrays: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """A copy of ``arrays`` with ``name`` corrupted as ``kind`` (a key of ``WEIGHT_CORRUPTIONS``)."""
    import numpy as np

    arrays = dict(arrays)
    change = WEIGHT_CORRUPTIONS[kind]
    if change is None:
        del arrays[name]
    else:
        arrays[name] = change(np.asarray(arrays[name]))
    return arrays


def unreadable_npz(folder: Path, kind: str) -> str:
    """An .npz path in ``folder`` that cannot be read: ``missing``, a ``directory``, ``not-a-zip``, ``truncated``."""
    import numpy as np

    path = Path(folder) / f"{kind}.npz"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-a-zip":
        path.write_text("these are not weights")
    elif kind == "truncated":
        np.savez(path, **{f"w{i}": np.ones((8, 8), np.float32) for i in range(4)})
        path.write_bytes(path.read_bytes()[:-200])
    return str(path)


def assert_weights_refused(err: BaseException, path: str | None = None, file: str | None = None) -> None:
    """One ``WeightsError`` whose problems are all located ``Problem``\\ s; ``path`` / ``file`` among them."""
    import specgraph

    assert isinstance(err, specgraph.WeightsError), type(err)
    assert err.problems
    for p in err.problems:
        assert isinstance(p, specgraph.Problem)
        assert p.message and (p.path or p.file), p
    if path is not None:
        # Model Garden variable names lose Keras's ':0', except an .npz member that cannot be read.
        assert {path, path.removesuffix(":0")} & {p.path for p in err.problems}, str(err)
    if file is not None:
        assert all(p.file == file for p in err.problems), str(err)


# ---------------------------------------------------------------- the backend conformance suite


def _sigmoid(x: Any) -> Any:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-x))


def _relu6(x: Any) -> Any:
    import numpy as np

    return np.minimum(np.maximum(x, 0.0), 6.0)


def _np(name: str) -> Callable[..., Any]:
    import numpy as np

    return getattr(np, name)


# Canonical activation -> numpy, written from the definitions (Model Garden's official/modeling/activations
# and tf.nn), independently of the core's table and of every backend.
ACTIVATION_REFERENCES: dict[str, Callable[[Any], Any]] = {
    "relu": lambda x: _np("maximum")(x, 0.0),
    "relu6": _relu6,
    "swish": lambda x: x * _sigmoid(x),
    "hard_swish": lambda x: x * _relu6(x + 3.0) / 6.0,
    "hard_sigmoid": lambda x: _relu6(x + 3.0) * 0.16667,
    "sigmoid": _sigmoid,
    "tanh": lambda x: _np("tanh")(x),
    "elu": lambda x: _np("where")(x > 0, x, _np("expm1")(_np("minimum")(x, 0.0))),
    "gelu": lambda x: 0.5 * x * (1.0 + _np("tanh")(0.7978845608028654 * (x + 0.044715 * x**3))),
    "mish": lambda x: x * _np("tanh")(_np("log1p")(_np("exp")(x))),
    "leaky_relu": lambda x: _np("where")(x > 0, x, 0.2 * x),
    "linear": lambda x: x,
}

def _softmax0(w: Any) -> Any:
    import numpy as np

    e = np.exp(w - np.max(w, axis=0))
    return e / e.sum(axis=0)


def _per_channel(w: Any) -> Any:
    """Weights (n,) or (n, C) shaped to broadcast on NCHW inputs stacked along a first axis."""
    return w.reshape(-1, 1, 1, 1, 1) if w.ndim == 1 else w.reshape(w.shape[0], 1, w.shape[1], 1, 1)


def _fast_normalised(xs: Any, w: Any) -> Any:
    import numpy as np

    r = _per_channel(np.maximum(w, 0.0))
    return (r * np.stack(xs)).sum(axis=0) / (r.sum(axis=0) + 1e-4)


# Fusion method -> numpy (inputs, weights) -> output, written from the formulas (EfficientDet's fast normalised and
# softmax fusion, NAS-FPN's global attention), independently of every backend.
FUSION_REFERENCES: dict[str, Callable[[Any, Any], Any]] = {
    "sum": lambda xs, w: sum(xs[1:], xs[0]),
    "weighted": _fast_normalised,
    "weighted_channel": _fast_normalised,
    "softmax": lambda xs, w: (_per_channel(_softmax0(w)) * _np("stack")(xs)).sum(axis=0),
    "attention": lambda xs, w: sum(xs[2:], xs[0] + xs[1] * _sigmoid(xs[0].max(axis=(2, 3), keepdims=True))),
    "concat": lambda xs, w: _np("concatenate")(xs, axis=1),
}

# Every block type, weighted fusion, a merge edge, up- and down-sampling, squeeze-excitation.
_SMALL_SPEC: dict[str, Any] = {
    "name": "conformance",
    "activation": "swish",
    "filters": {2: 8, 3: 16, 4: 24, 5: 24},
    "stem": {"conv": {"filters": 8, "kernel": 3, "stride": 2}, "pool": {"kernel": 3, "stride": 2},
             "blocks": [{"name": "s1", "level": 2, "type": "residual"}]},
    "fusion": {"method": "weighted", "merge_unused_into_outputs": True},
    "blocks": [
        {"name": "a", "level": 3, "type": "residual", "inputs": ["s1"]},
        {"name": "b", "level": 4, "type": "bottleneck", "inputs": ["s1", "a"]},
        {"name": "c", "level": 3, "type": "mbconv", "inputs": ["a"]},
        {"name": "d", "level": 3, "type": "residual", "inputs": ["a", "b"], "output": True},
        {"name": "e", "level": 4, "type": "bottleneck", "inputs": ["b", "d"], "output": True},
        {"name": "f", "level": 5, "type": "mbconv", "inputs": ["d", "e"], "output": True},
    ],
    "endpoints": {"min_level": 3, "max_level": 5},
    "variants": {"v": {"endpoints_num_filters": 16, "block_repeats": 1, "se_ratio": 0.25, "expand_ratio": 2.0}},
}
# Every op of op blocks (decoders): conv (strided too), separable conv, norm, activation, max-pool; inputs of
# several widths (projected), finer (max-pooled by 2 and 4) and coarser (upsampled); fusions with weights (per
# input, per input and channel, softmax) and concatenation; bare endpoints of several widths.
_DECODER_SPEC: dict[str, Any] = {
    "name": "decoder",
    "activation": "swish",
    "filters": {2: 8, 3: 16, 4: 24},
    "stem": {"conv": {"filters": 8, "kernel": 3, "stride": 2}, "pool": {"kernel": 3, "stride": 2},
             "blocks": [{"name": "s1", "level": 2, "type": "residual"},
                        {"name": "s2", "level": 3, "type": "bottleneck"},
                        {"name": "s3", "level": 4, "type": "residual"}]},
    "fusion": {"method": "weighted"},
    "blocks": [
        {"name": "p3", "level": 3, "inputs": ["s2", "s3"], "filters": 12, "fusion": "weighted_channel",
         "ops": [{"op": "conv", "kernel": 1, "bias": True}]},
        {"name": "p4", "level": 4, "inputs": ["p3", "s1"], "filters": 12,
         "ops": [{"op": "act"}, {"op": "separable_conv", "bias": True}, {"op": "norm"}]},
        {"name": "p5", "level": 5, "inputs": ["p4"], "filters": 10,
         "ops": [{"op": "conv", "stride": 2}, {"op": "norm"}, {"op": "act"}], "output": True},
        {"name": "p6", "level": 6, "inputs": ["p5"], "ops": [{"op": "maxpool"}], "output": True},
        {"name": "o3", "level": 3, "inputs": ["p3", "p4"], "filters": 12, "ops": [], "fusion": "softmax",
         "output": True},
        {"name": "o4", "level": 4, "inputs": ["p4", "p3"], "filters": 12, "fusion": "concat",
         "ops": [{"op": "conv", "kernel": 1}, {"op": "norm"}], "output": True},
    ],
    "endpoints": {"min_level": 3, "max_level": 6, "conv": False},
    "variants": {"v": {}},
}
# (id, spec, variant, input size): what the suite compiles, once per case and backend.
CONFORMANCE_CASES: list[tuple[str, Any, str | None, tuple[int, int]]] = [
    ("spinenet-49S", "spinenet", "49S", (64, 96)),
    ("mobile-49XS", "spinenet_mobile", "49XS", (64, 96)),
    ("resnet-50", "resnet", "50", (72, 104)),  # a stage chain with bare endpoints
    ("small", _SMALL_SPEC, None, (48, 80)),
    ("decoder", _DECODER_SPEC, None, (48, 80)),
]


def _relative(a: Any, b: Any) -> float:
    import numpy as np

    scale = float(np.abs(b).max()) or 1.0
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) / scale


class BackendConformance:
    """What every specgraph backend must do, checked against the core's own references (the
    null backend's shapes, ``specgraph.stats``, numpy activations). A backend's test module::

        class TestMyBackend(specgraph.testing.BackendConformance):
            backend = "mybackend"

    The backend must satisfy :class:`specgraph.backend_api.ConformingBackend`.
    """

    backend: str = ""

    @pytest.fixture(scope="class")
    @classmethod
    def plugin(cls) -> Any:
        import specgraph

        return specgraph.get_backend(cls.backend)

    @pytest.fixture(scope="class", params=CONFORMANCE_CASES, ids=[c[0] for c in CONFORMANCE_CASES])
    @classmethod
    def case(cls, request: Any, plugin: Any) -> tuple[Any, Any]:
        import specgraph

        _, spec, variant, size = request.param
        plan = specgraph.plan(spec, variant, size)
        return plan, plugin.compile(plan)

    @staticmethod
    def _images(plan: Any, batch: int = 2, size: tuple[int, int] | None = None, seed: int = 0) -> Any:
        import numpy as np

        h, w = size or plan.input_size
        return np.random.default_rng(seed).standard_normal((batch, plan.input_channels, h, w)).astype(np.float32)

    def test_is_a_conforming_backend(self, plugin: Any) -> None:
        from specgraph.backend_api import ConformingBackend

        assert isinstance(plugin, ConformingBackend), f"{self.backend}: see specgraph.backend_api.ConformingBackend"

    def test_output_shapes_equal_the_null_backends(self, plugin: Any, case: tuple[Any, Any]) -> None:
        import specgraph

        plan, model = case
        want = specgraph.compile(plan, backend="null")((2, plan.input_channels, *plan.input_size))
        got = plugin.predict(model, self._images(plan))
        assert {k: tuple(v.shape) for k, v in got.items()} == want
        # Any other size: ceil(size / 2**level), computed here by hand.
        h, w = plan.input_size[0] + 13, plan.input_size[1] + 7
        other = plugin.predict(model, self._images(plan, 1, (h, w)))
        assert {k: tuple(v.shape[2:]) for k, v in other.items()} == {
            k: (-(-h // 2 ** int(k)), -(-w // 2 ** int(k))) for k in want}

    def test_parameter_count_equals_stats(self, plugin: Any, case: tuple[Any, Any]) -> None:
        import specgraph

        plan, model = case
        assert plugin.count_parameters(model) == specgraph.stats(plan).params

    def test_structural_weights_cover_the_model_and_round_trip(self, plugin: Any, case: tuple[Any, Any]) -> None:
        import numpy as np

        import specgraph

        plan, model = case
        arrays = plugin.to_structural(model)
        assert sum(int(np.asarray(a).size) for a in arrays.values()) == specgraph.stats(plan).params
        # Non-default values everywhere (variances stay positive), into the model and into a fresh one.
        rng = np.random.default_rng(1)
        changed = {k: (np.abs(a) + 0.5 if k.endswith(("moving_variance", "running_var")) else
                       a + 0.05 * rng.standard_normal(a.shape)).astype(np.asarray(a).dtype) for k, a in arrays.items()}
        fresh = plugin.compile(plan)
        for target in (model, fresh):
            report = plugin.load_structural(target, changed)
            assert not report.missing and not report.unexpected
        again = plugin.to_structural(fresh)
        assert set(again) == set(changed) and all(np.array_equal(again[k], changed[k]) for k in changed)
        images = self._images(plan)
        a, b = plugin.predict(model, images), plugin.predict(fresh, images)
        assert all(np.array_equal(a[k], b[k]) for k in a)

    def test_emitted_source_equals_the_compiled_model(self, plugin: Any, case: tuple[Any, Any]) -> None:
        from specgraph.backend_api import header

        plan, model = case
        emitted = plugin.emitted_model(plugin.emit(plan, header(plan)), model)
        images = self._images(plan, seed=3)
        want, got = plugin.predict(model, images), plugin.predict(emitted, images)
        assert sorted(got) == sorted(want)
        assert max(_relative(got[k], want[k]) for k in want) <= 1e-6

    @pytest.mark.parametrize("method", sorted(FUSION_REFERENCES))
    def test_every_fusion_matches_the_core_formula(self, plugin: Any, method: str) -> None:
        """Three inputs (NCHW, 4 channels), weights of the shape the core gives, not all positive."""
        import numpy as np

        from specgraph.backend_api import FUSIONS, fusion_weight_shape

        assert set(FUSION_REFERENCES) == set(FUSIONS)
        rng = np.random.default_rng(0)
        xs = [rng.standard_normal((2, 4, 3, 5)).astype(np.float32) for _ in range(3)]
        shape = fusion_weight_shape(method, 3, 4)
        weights = None if shape is None else rng.uniform(-0.5, 2.0, shape).astype(np.float32)
        want = FUSION_REFERENCES[method](xs, weights)
        got = plugin.apply_fusion(method, xs, weights)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{self.backend} {method}")

    @pytest.mark.parametrize("name", [*sorted(ACTIVATION_REFERENCES), "silu", "simple_swish", "identity"])
    def test_every_activation_matches_the_core_formula(self, plugin: Any, name: str) -> None:
        import numpy as np

        from specgraph.backend_api import canonical_activation

        x = np.concatenate([np.linspace(-8.0, 8.0, 161), [-3.0, 0.0, 3.0, 6.0, -20.0, 20.0]])
        want = ACTIVATION_REFERENCES[canonical_activation(name)](x)
        got = plugin.apply_activation(name, x)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=f"{self.backend} {name}")

    # -- loading weights is all or nothing: every refused load names its problems and changes nothing

    @pytest.fixture(scope="class")
    @classmethod
    def load_target(cls, plugin: Any) -> tuple[Any, dict[str, Any]]:
        """A small model, and another one's weights (a different random init) to load into it."""
        import specgraph

        plan = specgraph.plan(_SMALL_SPEC, None, (48, 80))
        return plugin.compile(plan), dict(plugin.to_structural(plugin.compile(plan)))

    @staticmethod
    def _snapshot(plugin: Any, model: Any) -> dict[str, Any]:
        import numpy as np

        return {k: np.array(v, copy=True) for k, v in plugin.to_structural(model).items()}

    def _assert_unchanged(self, plugin: Any, model: Any, before: dict[str, Any]) -> None:
        after = self._snapshot(plugin, model)
        assert after.keys() == before.keys()
        changed = [k for k in before if after[k].dtype != before[k].dtype or after[k].tobytes() != before[k].tobytes()]
        assert not changed, changed[:5]

    @pytest.mark.parametrize(("route", "kind"), WEIGHT_ROUTES)
    def test_a_bad_entry_loads_nothing(self, plugin: Any, load_target: Any, tmp_path: Path, route: str,
                                       kind: str) -> None:
        """The bad entry is the source's last one: a loader that copied before checking would have
        overwritten everything before it."""
        import numpy as np

        import specgraph

        model, source = load_target
        name = list(source)[-1]
        arrays: Any = corrupt_weights(source, kind, name)
        if route == "npz":
            np.savez(tmp_path / "w.npz", **arrays)
            arrays = str(tmp_path / "w.npz")
        before = self._snapshot(plugin, model)
        with pytest.raises(specgraph.WeightsError) as info:
            plugin.load_structural(model, arrays)
        assert_weights_refused(info.value, path=name, file=arrays if route == "npz" else None)
        self._assert_unchanged(plugin, model, before)

    def test_early_and_late_problems_are_listed_together(self, plugin: Any, load_target: Any) -> None:
        import numpy as np

        import specgraph

        model, source = load_target
        names = list(source)
        arrays = corrupt_weights(source, "nan", names[0])
        arrays = corrupt_weights(corrupt_weights(arrays, "bool", names[-1]), "missing", names[len(names) // 2])
        arrays["nonesuch/op0/kernel"] = np.zeros(3, np.float32)
        before = self._snapshot(plugin, model)
        with pytest.raises(specgraph.WeightsError) as info:
            plugin.load_structural(model, arrays)
        assert_weights_refused(info.value)
        assert {p.path for p in info.value.problems} == {names[0], names[-1], names[len(names) // 2],
                                                         "nonesuch/op0/kernel"}
        self._assert_unchanged(plugin, model, before)

    @pytest.mark.parametrize("kind", UNREADABLE_NPZ)
    def test_an_unreadable_file_loads_nothing(self, plugin: Any, load_target: Any, tmp_path: Path,
                                              kind: str) -> None:
        import specgraph

        model, _ = load_target
        path = unreadable_npz(tmp_path, kind)
        before = self._snapshot(plugin, model)
        with pytest.raises(specgraph.WeightsError) as info:
            plugin.load_structural(model, path)
        assert_weights_refused(info.value, file=path)
        self._assert_unchanged(plugin, model, before)

    @pytest.mark.parametrize("bad", [None, 3])
    def test_a_bad_argument_is_named(self, plugin: Any, load_target: Any, bad: Any) -> None:
        import specgraph

        model, source = load_target
        with pytest.raises(specgraph.ArgumentError) as info:
            plugin.load_structural(model, bad)
        assert info.value.problems[0].path in ("arrays", "source")
        with pytest.raises(specgraph.ArgumentError) as info:
            plugin.load_structural(bad, source)
        assert info.value.problems[0].path == "model"


@st.composite
def decoder_specs(draw: st.DrawFn, up: str | None = None) -> dict[str, Any]:
    """A random valid decoder spec (plain data): declared inputs at some of levels 3..7, op blocks (random ops,
    widths, fusions) that give levels 3..7, and half the time a repeated cell of op blocks on some of them;
    endpoint convs or bare endpoints; its own activation, fusion default, pool kernel, upsampling (``up``, when
    given) and separable switch."""
    levels = sorted(draw(st.lists(st.integers(3, 7), min_size=1, max_size=3, unique=True)))
    inputs = [{"name": f"in{lvl}", "level": lvl, "filters": draw(st.integers(4, 32))} for lvl in levels]
    names = [i["name"] for i in inputs]
    blocks: list[dict[str, Any]] = []
    for level in draw(st.permutations(list(range(3, 8)))):
        sources = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        fusions = [*_FUSIONS, "attention"] if len(sources) > 1 else _FUSIONS
        block = {"name": f"d{level}", "level": level, "inputs": sources, "filters": draw(st.integers(4, 32)),
                 "ops": draw(_block_ops(level)), "output": True}
        if draw(st.booleans()):
            block["fusion"] = draw(st.sampled_from(fusions))
        blocks.append(block)
        names.append(block["name"])
    decoder: dict[str, Any] = {
        "name": "decoder", "activation": draw(st.sampled_from(["relu", "swish", "relu6"])), "inputs": inputs,
        "blocks": blocks, "resample": {"up": up or draw(st.sampled_from(["nearest", "bilinear"])),
                                       "pool_kernel": draw(st.sampled_from(["stride", "stride+1"]))},
        "fusion": {"method": draw(st.sampled_from(["sum", "weighted", "softmax"]))},
        "endpoints": {"conv": draw(st.booleans())},
        "variants": {"v": {"separable": draw(st.booleans())}},
    }
    if decoder["endpoints"]["conv"]:
        decoder["variants"]["v"]["endpoints_num_filters"] = draw(st.integers(1, 32))
    if draw(st.booleans()):
        cell_levels = draw(st.lists(st.integers(3, 7), min_size=1, max_size=3, unique=True))
        cell_blocks: list[dict[str, Any]] = []
        for level in cell_levels:
            sources = [f"d{level}", *draw(st.lists(st.sampled_from([b["name"] for b in cell_blocks] or
                                                                    [f"d{level}"]), max_size=1, unique=True))]
            sources = list(dict.fromkeys(sources))
            fusions = [*_FUSIONS, "attention"] if len(sources) > 1 else _FUSIONS
            cell_blocks.append({"name": f"c{level}", "level": level, "inputs": sources, "output": True,
                                "filters": draw(st.integers(4, 32)), "ops": draw(_block_ops(level)),
                                "fusion": draw(st.sampled_from(fusions))})
        for block in blocks:
            block["output"] = block["level"] not in cell_levels
        decoder["cells"] = [{"name": "dcell", "repeats": draw(st.integers(1, 3)),
                             "inputs": [f"d{lvl}" for lvl in cell_levels],
                             "outputs": [f"c{lvl}" for lvl in cell_levels], "blocks": cell_blocks}]
    return decoder


@st.composite
def composed_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A random valid composition (plain data): a random backbone (:func:`valid_specs`, its endpoints 3..7) under
    a random decoder given inline (:func:`decoder_specs`, upsampling as the backbone does)."""
    backbone = draw(valid_specs())
    decoder = draw(decoder_specs(backbone["resample"]["up"]))
    return {"name": "composed", "backbone": backbone, "decoders": [decoder],
            "variants": {"v": {"use": {"random": "v", "decoder": "v"}}}}
