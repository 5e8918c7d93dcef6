"""Partial weight loading in both backends: ``strict=False``, ``prefix`` and the load report.

The reference for what is loaded, missing or unexpected is the set difference of the two
models' weight names, worked out from which nodes each plan has (by hand below for
SpineNet-49S); outputs are compared with the model the weights came from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import specgraph

SIZE = 128
BACKENDS = ["torch", "tensorflow"]
# SpineNet-49S (plan.table()): levels [3, 5] leave out sp14 and sp15 (they feed only endpoints 7
# and 6) and endpoints 4, 6 and 7.
NOT_BUILT_FOR_3_5 = {"sp14", "sp15", "endpoint_4", "endpoint_6", "endpoint_7"}


class Backend:
    """The backend's contract hooks (``specgraph.backend_api.ConformingBackend``): structural weights
    in and out as numpy, inference on NCHW numpy images."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.plugin = specgraph.get_backend(name)

    def weights(self, model: Any) -> dict[str, np.ndarray]:
        return {k: np.array(v, copy=True) for k, v in self.plugin.to_structural(model).items()}

    def load(self, model: Any, arrays: Any, **kwargs: Any) -> Any:
        if isinstance(arrays, str):  # an .npz file: each backend's public loader reads paths too
            loader = self.plugin.load_structural if self.name == "torch" else self.plugin.load_weights
            return loader(model, arrays, **kwargs)
        return self.plugin.load_structural(model, arrays, **kwargs)

    def run(self, model: Any, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.plugin.predict(model, x)


def _node(name: str) -> str:
    return name.split("/", 1)[0]  # SpineNet's node names hold no "/"


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    return Backend(request.param)


@pytest.fixture(scope="module")
def full(backend: Backend) -> tuple[Any, dict[str, np.ndarray]]:
    """A full SpineNet-49S with random BN statistics, and its weights."""
    model = specgraph.compile("spinenet", backend=backend.name, variant="49S", input_size=SIZE)
    rng = np.random.default_rng(7)
    arrays = backend.weights(model)
    for name, a in arrays.items():
        if name.endswith(("moving_mean", "beta")):
            arrays[name] = rng.normal(0.0, 0.1, a.shape).astype(np.float32)
        elif name.endswith(("moving_variance", "gamma")):
            arrays[name] = rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
    backend.load(model, arrays)
    return model, arrays


@pytest.fixture(scope="module")
def selected(backend: Backend) -> Any:
    """A levels=[3, 5] SpineNet-49S (fresh random weights; tests reload it as they need)."""
    return specgraph.compile("spinenet", backend=backend.name, variant="49S", input_size=SIZE, levels=[3, 5])


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)


def test_strict_refuses_the_full_models_extra_weights(backend: Backend, full: Any, selected: Any) -> None:
    before = backend.weights(selected)
    with pytest.raises(specgraph.WeightsError) as caught:
        backend.load(selected, full[1])
    expected = {k for k in full[1] if _node(k) in NOT_BUILT_FOR_3_5}
    assert {p.path for p in caught.value.problems} == expected
    assert all("unexpected" in p.message for p in caught.value.problems)
    after = backend.weights(selected)
    assert all(np.array_equal(after[k], before[k]) for k in before)  # nothing loaded


def test_non_strict_loads_the_rest_and_reports_it(backend: Backend, full: Any, selected: Any,
                                                  image: np.ndarray) -> None:
    model, arrays = full
    report = backend.load(selected, arrays, strict=False)
    assert isinstance(report, specgraph._weights.LoadReport)
    names = set(backend.weights(selected))
    assert set(report.unexpected) == {k for k in arrays if _node(k) in NOT_BUILT_FOR_3_5}
    # ... which are exactly the weights of the pruned blocks and of the endpoints not asked for.
    plan = selected.plan
    assert {_node(k) for k in report.unexpected} == (set(plan.pruned) - {"sp16"}) | {"endpoint_4", "endpoint_6",
                                                                                      "endpoint_7"}
    assert report.missing == () and set(report.loaded) == names and report.complete
    got, want = backend.run(selected, image), backend.run(model, image)
    assert list(got) == ["3", "5"]
    for level in got:
        np.testing.assert_allclose(got[level], want[level], rtol=0, atol=1e-6)
    text = str(report)
    assert f"loaded {len(names)} of {len(names)} weights" in text
    assert f"unexpected (not in the model, not loaded): {len(report.unexpected)}" in text and "more" in text


def test_non_strict_into_the_bigger_model_reports_missing(backend: Backend, full: Any, selected: Any) -> None:
    target = specgraph.compile("spinenet", backend=backend.name, variant="49S", input_size=SIZE)
    before = backend.weights(target)
    small = backend.weights(selected)
    report = backend.load(target, small, strict=False)
    assert set(report.missing) == {k for k in before if _node(k) in NOT_BUILT_FOR_3_5}
    assert report.unexpected == () and set(report.loaded) == set(small) and not report.complete
    after = backend.weights(target)
    for name in before:  # loaded ones took the source's values, missing ones kept theirs
        np.testing.assert_array_equal(after[name], small[name] if name in small else before[name])
    assert "missing (left as they were)" in str(report)


def test_prefix_selects_and_strips(backend: Backend, full: Any, selected: Any, image: np.ndarray) -> None:
    model, arrays = full
    detector = {f"backbone/{k}": v for k, v in arrays.items()}
    detector["head/cls/kernel"] = np.zeros((3, 3, 128, 9), np.float32)
    report = backend.load(model, detector, prefix="backbone/")
    assert set(report.loaded) == set(arrays) and report.ignored == ("head/cls/kernel",) and report.prefix == "backbone/"
    assert "ignored (outside the prefix): 1" in str(report)
    report = backend.load(selected, detector, prefix="backbone/", strict=False)
    assert set(report.unexpected) == {k for k in arrays if _node(k) in NOT_BUILT_FOR_3_5}
    got, want = backend.run(selected, image), backend.run(model, image)
    np.testing.assert_allclose(got["5"], want["5"], rtol=0, atol=1e-6)
    with pytest.raises(specgraph.WeightsError, match="unexpected"):
        backend.load(model, detector)  # without the prefix every name is unexpected
    with pytest.raises(specgraph.WeightsError) as caught:
        backend.load(model, detector, prefix="model/")
    assert caught.value.problems[0].path == "prefix" and "backbone/" in str(caught.value)


def test_non_strict_is_still_all_or_nothing(backend: Backend, full: Any, selected: Any) -> None:
    before = backend.weights(selected)
    arrays = dict(full[1])
    bad = np.array(arrays["sp13/unit0/conv2/kernel"])
    bad[0, 0, 0, 0] = np.nan
    arrays["sp13/unit0/conv2/kernel"] = bad
    arrays["endpoint_3/op0/gamma"] = np.ones(7, np.float32)
    with pytest.raises(specgraph.WeightsError) as caught:
        backend.load(selected, arrays, strict=False)
    assert {p.path for p in caught.value.problems} == {"sp13/unit0/conv2/kernel", "endpoint_3/op0/gamma"}
    after = backend.weights(selected)
    assert all(np.array_equal(after[k], before[k]) for k in before)
    with pytest.raises(specgraph.WeightsError, match="nothing to load"):
        backend.load(selected, {"head/kernel": np.zeros(3, np.float32)}, strict=False)


@pytest.mark.parametrize(("kwargs", "name"), [({"strict": "no"}, "strict"), ({"strict": 0}, "strict"),
                                              ({"prefix": 3}, "prefix"), ({"prefix": None}, "prefix")])
def test_bad_arguments(backend: Backend, selected: Any, kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(specgraph.ArgumentError) as caught:
        backend.load(selected, {"a": np.zeros(1)}, **kwargs)
    assert caught.value.problems[0].path == name


def test_npz_with_prefix(backend: Backend, full: Any, selected: Any, tmp_path: Any) -> None:
    path = tmp_path / "detector.npz"
    np.savez(path, **{f"backbone/{k}": v for k, v in full[1].items()})
    report = backend.load(selected, str(path), prefix="backbone/", strict=False)
    assert report.file == str(path) and len(report.loaded) == len(backend.weights(selected))


def test_torchvision_detector_state_dict_into_a_bare_backbone(image: np.ndarray) -> None:
    """A torchvision RetinaNet's ``state_dict()`` keeps the backbone under ``backbone.body.``: loaded by prefix."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from specgraph_torch.detection import TorchvisionBackbone, anchor_generator
    from torchvision.models.detection import RetinaNet

    source = specgraph.compile("spinenet", backend="torch", variant="49S", input_size=SIZE)
    with torch.no_grad():  # non-trivial BN statistics, so a wrong mapping shows in the outputs
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    wrapped = TorchvisionBackbone(source)
    detector = RetinaNet(wrapped, num_classes=3, anchor_generator=anchor_generator(wrapped))
    state = detector.state_dict()
    bare = specgraph.compile("spinenet", backend="torch", variant="49S", input_size=SIZE)
    report = specgraph.get_backend("torch").load_structural(bare, state, prefix="backbone.body.")
    keys = [k for k in source.state_dict() if not k.endswith("num_batches_tracked")]
    assert set(report.loaded) == set(keys) and report.missing == report.unexpected == ()
    assert all(k.startswith("head.") or k.endswith("num_batches_tracked") for k in report.ignored)
    for k, v in source.state_dict().items():
        assert torch.equal(bare.state_dict()[k], v) or k.endswith("num_batches_tracked")
    # Into a level selection: strict=False, the detector's other endpoints and blocks are unexpected.
    sel = specgraph.compile("spinenet", backend="torch", variant="49S", input_size=SIZE, levels=[3, 5])
    plugin = specgraph.get_backend("torch")
    report = plugin.load_structural(sel, state, prefix="backbone.body.", strict=False)
    assert {k.split(".")[1] for k in report.unexpected} == NOT_BUILT_FOR_3_5
    got, want = plugin.predict(sel, image), plugin.predict(source, image)
    np.testing.assert_allclose(got["3"], want["3"], rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.modelgarden
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_modelgarden_weights_into_a_level_selection(backend_name: str, image: np.ndarray) -> None:
    """Model Garden has no level selection: a levels=[3, 5] model takes the weights of its SpineNet with
    min_level 3, max_level 5, leaving out the layers of endpoint 4 (outputs equal Model Garden's)."""
    backend = Backend(backend_name)
    tf_keras = pytest.importorskip("tf_keras")
    spinenet = pytest.importorskip("official.vision.modeling.backbones.spinenet")
    s = spinenet.SCALING_MAP["49S"]
    mg = spinenet.SpineNet(input_specs=tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3]), min_level=3,
                           max_level=5, endpoints_num_filters=s["endpoints_num_filters"],
                           resample_alpha=s["resample_alpha"], block_repeats=s["block_repeats"],
                           filter_size_scale=s["filter_size_scale"])
    rng = np.random.default_rng(3)
    for v in mg.weights:
        if "moving_variance" in v.name or "gamma" in v.name:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
        elif "moving_mean" in v.name or "beta" in v.name:
            v.assign(rng.normal(0.0, 0.1, v.shape).astype(np.float32))
    model = specgraph.compile("spinenet", backend=backend_name, variant="49S", input_size=SIZE, levels=[3, 5])
    if backend_name == "torch":
        backend.plugin.load_modelgarden_weights(model, mg)
    else:
        report = backend.plugin.load_weights(model, mg)
        assert set(report.loaded) == set(backend.weights(model))
    want = mg(image.transpose(0, 2, 3, 1), training=False)
    got = backend.run(model, image)
    assert list(got) == ["3", "5"]
    for level in got:
        ref = want[level].numpy().transpose(0, 3, 1, 2)
        assert np.abs(got[level] - ref).max() / np.abs(ref).max() <= 1e-4
