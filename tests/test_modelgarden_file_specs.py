"""Model Garden weights into models of a spec loaded from a file, not by a built-in name (issue 16).

Model Garden creates every block of its block table, also the ones that feed no requested endpoint
(the plan prunes them: sp16 at min_level 3, sp12 too at min_level 4, sp14 and sp15 for levels
[3, 5]); their layers take Keras name counters, and a level selection loads from the network of
its whole ``min_level..max_level``. The loaders read all of that off the plan (``Plan.pruned_nodes``,
``Plan.contiguous()``): they must never re-plan from ``plan.spec_name``. So the spec here is the
built-in ``spinenet`` written to a file under another name (``dumps`` keeps the spec's own name,
which is a built-in one): nothing can be re-planned from it.

Before the plan kept the pruned nodes, this spec's min_level 4 network mis-mapped 135 of 610 Model
Garden variables in torch (sp12's layers were not replayed), and ``levels=[3, 5]`` was refused by
both backends ("a spec that is not built in").
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import numpy as np
import pytest

import specgraph
from specgraph import Plan, PlanError

torch = pytest.importorskip("torch")  # torch before tensorflow: torchvision crashes when imported after it
specgraph_torch = pytest.importorskip("specgraph_torch")

VARIANT = "49S"
SIZE = (128, 128)
# (id, plan keywords, Model Garden's min_level..max_level, what the plan prunes)
CASES = [
    ("levels-3-7", {}, (3, 7), ("sp16",)),
    ("min-level-4", {"min_level": 4}, (4, 7), ("sp12", "sp16")),  # sp12 mid-network: later names shift
    ("levels-3-5", {"levels": [3, 5]}, (3, 5), ("sp14", "sp15", "sp16")),
]
IDS = [case[0] for case in CASES]
# The hash of SpineNet-49 at 640x640 (docs/spinenet-49.svg embeds it): keeping sp16's nodes must not change it.
SPINENET_49_HASH = "9e380b9dd275832a41b3bd298d9a03efe91b0109d7f6d99c57116878c10d9869"


@pytest.fixture(scope="module")
def file_spec(tmp_path_factory: pytest.TempPathFactory) -> specgraph.Spec:
    """The built-in SpineNet spec, read from a TOML file whose spec name is no built-in name."""
    text, count = re.subn(r'(?m)^name = "spinenet"$', 'name = "my_spinenet"', specgraph.load("spinenet").dumps("toml"))
    assert count == 1
    path = tmp_path_factory.mktemp("specs") / "my_spinenet.toml"
    path.write_text(text, encoding="utf-8")
    spec = specgraph.load(path)
    assert spec.name == "my_spinenet" and spec.name not in specgraph.builtin_specs()
    return spec


def _plan(spec: Any, kwargs: dict[str, Any]) -> Plan:
    return specgraph.plan(spec, VARIANT, SIZE, **kwargs)


# ---------------------------------------------------------------- the plan (no Model Garden)


@pytest.mark.parametrize(("kwargs", "pruned"), [case[1::2] for case in CASES], ids=IDS)
def test_plan_keeps_the_pruned_nodes(file_spec, kwargs, pruned):
    plan = _plan(file_spec, kwargs)
    assert plan.pruned == pruned
    kept = {node.name for _, node in plan.pruned_nodes}
    assert set(pruned) <= kept and not kept & {node.name for node in plan.nodes}
    # The same nodes as the built-in spec's plan: only the name differs.
    assert dataclasses.replace(plan, spec_name="spinenet") == _plan("spinenet", kwargs)
    # Merged back in build order, they are every node the planner made; a selection's skipped endpoints are last.
    names = [node.name for node in plan.unpruned_nodes]
    if "levels" in kwargs:
        assert names[-3:] == ["endpoint_3", "endpoint_4", "endpoint_5"]
    assert [n for n in names if n in {node.name for node in plan.nodes}] == [node.name for node in plan.nodes]


@pytest.mark.parametrize("kwargs", [case[1] for case in CASES], ids=IDS)
def test_plan_dict_round_trips_with_the_pruned_nodes(file_spec, kwargs):
    plan = _plan(file_spec, kwargs)
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and again.hash == plan.hash and again.pruned_nodes == plan.pruned_nodes


def test_pruned_nodes_leave_the_hash_and_plain_dicts_as_they_were():
    plan = specgraph.plan("spinenet", "49", 640)
    assert plan.pruned == ("sp16",) and plan.pruned_nodes
    assert plan.hash == SPINENET_49_HASH
    assert plan.hash == dataclasses.replace(plan, pruned_nodes=()).hash
    plain = specgraph.plan("spinenet", "49", 640, min_level=2)
    assert plain.pruned == () and "pruned_nodes" not in plain.to_dict()


def test_contiguous_is_made_from_the_plan_alone(file_spec):
    selection = _plan(file_spec, {"levels": [3, 5]})
    whole = selection.contiguous()
    assert whole == _plan(file_spec, {"min_level": 3, "max_level": 5})
    assert whole.hash == _plan(file_spec, {"min_level": 3, "max_level": 5}).hash
    assert whole.contiguous() is whole
    # A plan read from a dict (another process, a Keras config) has all it needs too.
    assert Plan.from_dict(selection.to_dict()).contiguous() == whole


def test_contiguous_of_a_selection_without_a_whole_network(mini):
    data = mini()
    next(b for b in data["blocks"] if b["name"] == "o4")["output"] = False
    data["endpoints"] = {"min_level": 3, "max_level": 3}
    selection = specgraph.plan(specgraph.load(data), input_size=64, levels=[3, 5])
    with pytest.raises(PlanError, match="level 4"):
        selection.contiguous()


@pytest.mark.parametrize("kwargs", [case[1] for case in CASES], ids=IDS)
def test_torch_names_do_not_depend_on_the_spec_name(file_spec, kwargs):
    def names(plan: Plan) -> list[tuple[Any, ...]]:
        return [(e.layer, e.inner, e.var, e.torch_key) for e in specgraph_torch.modelgarden_names(plan)]

    assert names(_plan(file_spec, kwargs)) == names(_plan("spinenet", kwargs))


def test_a_plan_without_its_pruned_nodes_is_refused(file_spec):
    """A plan dict written before plans kept their pruned nodes cannot be mapped: refused, never mis-mapped."""
    data = _plan(file_spec, {"min_level": 4}).to_dict()
    del data["pruned_nodes"]
    model = specgraph_torch.compile(Plan.from_dict(data))
    with pytest.raises(specgraph.WeightsError, match="sp12, sp16"):
        specgraph_torch.load_modelgarden_weights(model, {})


# ---------------------------------------------------------------- against Model Garden


def _randomize(model: Any, seed: int) -> None:
    """Non-default BN statistics, affine parameters and biases (kernels keep their random init)."""
    rng = np.random.default_rng(seed)
    draws = {"moving_mean": lambda s: rng.normal(0.0, 0.1, s), "moving_variance": lambda s: rng.uniform(0.5, 1.5, s),
             "gamma": lambda s: rng.uniform(0.5, 1.5, s), "beta": lambda s: rng.normal(0.0, 0.1, s),
             "bias": lambda s: rng.normal(0.0, 0.1, s)}
    for weight in model.weights:
        role = weight.name.split("/")[-1].removesuffix(":0")
        if role in draws:
            weight.assign(draws[role](tuple(weight.shape)).astype(np.float32))


@pytest.fixture(scope="module")
def modelgarden() -> Any:
    """``build(min_level, max_level)``: Model Garden's own SpineNet-49S at a fixed SIZE, randomised; once each."""
    pytest.importorskip("official.vision.modeling.backbones")
    import tf_keras
    from official.vision.modeling.backbones import spinenet

    cache: dict[tuple[int, int], Any] = {}

    def build(min_level: int, max_level: int) -> Any:
        if (min_level, max_level) not in cache:
            s = spinenet.SCALING_MAP[VARIANT]
            model = spinenet.SpineNet(input_specs=tf_keras.layers.InputSpec(shape=[None, *SIZE, 3]),
                                      min_level=min_level, max_level=max_level,
                                      endpoints_num_filters=s["endpoints_num_filters"],
                                      resample_alpha=s["resample_alpha"], block_repeats=s["block_repeats"],
                                      filter_size_scale=s["filter_size_scale"])
            _randomize(model, seed=len(cache))
            cache[(min_level, max_level)] = model
        return cache[(min_level, max_level)]

    return build


def _images() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(2, *SIZE, 3)).astype(np.float32)


def _differences(reference: dict[str, Any], outputs: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Per output level: (max |Δ| / max |reference|, max |Δ|); NHWC both."""
    out = {}
    for level, value in outputs.items():
        ref = np.asarray(reference[level])
        assert value.shape == ref.shape, level
        delta = float(np.abs(value - ref).max())
        out[level] = (delta / float(np.abs(ref).max()), delta)
    return out


def _check(name: str, reference: dict[str, Any], before: dict[str, np.ndarray], after: dict[str, np.ndarray],
           levels: list[str], tolerance: float) -> None:
    assert sorted(after) == sorted(levels)
    assert min(rel for rel, _ in _differences(reference, before).values()) > 1e-2  # not equal by accident
    diff = _differences(reference, after)
    print(f"\n{name}: max |Δ| per level (relative, absolute): "
          + ", ".join(f"{k}: {rel:.1e}, {ab:.1e}" for k, (rel, ab) in sorted(diff.items())))
    assert max(rel for rel, _ in diff.values()) <= tolerance, diff


@pytest.mark.slow
@pytest.mark.modelgarden
@pytest.mark.parametrize(("kwargs", "levels"), [case[1:3] for case in CASES], ids=IDS)
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_modelgarden_weights_into_a_file_spec(file_spec, modelgarden, backend, kwargs, levels):
    plan = _plan(file_spec, kwargs)
    mg = modelgarden(*levels)
    x = _images()
    reference = {k: v.numpy() for k, v in mg(x, training=False).items()}
    assert sorted(reference) == [str(lv) for lv in range(levels[0], levels[1] + 1)]
    if backend == "torch":
        model = specgraph_torch.compile(plan).eval()

        def run() -> dict[str, np.ndarray]:
            with torch.no_grad():
                out = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
            return {k: v.numpy().transpose(0, 2, 3, 1) for k, v in out.items()}

        before = run()
        specgraph_torch.load_modelgarden_weights(model, mg)
        tolerance = 1e-4
    else:
        import specgraph_tensorflow as sgt

        keras_model = sgt.compile(plan)

        def run() -> dict[str, np.ndarray]:
            return {k: v.numpy() for k, v in keras_model(x, training=False).items()}

        before = run()
        sgt.load_modelgarden_weights(keras_model, mg)
        tolerance = 1e-5
    _check(f"{backend} {plan.spec_name} {VARIANT} {plan.levels_label}", reference, before, run(),
           [key for key, _ in plan.endpoints], tolerance)

