"""Fixtures for the TensorFlow backend tests: Model Garden references are built once per session."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
specgraph_tensorflow = pytest.importorskip("specgraph_tensorflow")

import specgraph  # noqa: E402

# Small, non-square: every level's size is exact (divisible by 2**7 in neither H nor W would also work).
H, W = 256, 384


def randomize_norms(model: Any, seed: int) -> None:
    """Random non-trivial BN statistics and biases in a Keras model (Model Garden's or ours), so a
    wrong weight mapping cannot go unnoticed and outputs stay far from zero."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        name = v.name
        if "moving_mean" in name:
            a = rng.normal(0.0, 0.1, v.shape)
        elif "moving_variance" in name or "gamma" in name:
            a = rng.uniform(0.5, 1.5, v.shape)
        elif "beta" in name or "bias" in name:
            a = rng.normal(0.0, 0.1, v.shape)
        else:
            continue  # kernels keep their (random) initialisation
        v.assign(a.astype(np.float32))


def _modelgarden(kind: str, model_id: str, shape: list[int | None]) -> Any:
    spinenet = pytest.importorskip("official.vision.modeling.backbones.spinenet")
    spinenet_mobile = pytest.importorskip("official.vision.modeling.backbones.spinenet_mobile")
    spec = tf_keras.layers.InputSpec(shape=shape)
    if kind == "spinenet":
        s = spinenet.SCALING_MAP[model_id]
        return spinenet.SpineNet(input_specs=spec, endpoints_num_filters=s["endpoints_num_filters"],
                                 resample_alpha=s["resample_alpha"], block_repeats=s["block_repeats"],
                                 filter_size_scale=s["filter_size_scale"])
    s = spinenet_mobile.SCALING_MAP[model_id]
    return spinenet_mobile.SpineNetMobile(input_specs=spec, endpoints_num_filters=s["endpoints_num_filters"],
                                          block_repeats=s["block_repeats"], filter_size_scale=s["filter_size_scale"])


@pytest.fixture(scope="session")
def mg_spinenet_49s() -> Any:
    """Model Garden SpineNet-49S at a fixed 256x384 input (so sp10 exists), random weights and BN stats."""
    model = _modelgarden("spinenet", "49S", [None, H, W, 3])
    randomize_norms(model, seed=1)
    return model


@pytest.fixture(scope="session")
def mg_mobile_49xs() -> Any:
    """Model Garden SpineNet-Mobile-49XS at a fixed 256x384 input (so sp11 exists), randomised."""
    model = _modelgarden("spinenet_mobile", "49XS", [None, H, W, 3])
    randomize_norms(model, seed=2)
    return model


@pytest.fixture(scope="session")
def mobile_49xs() -> Any:
    """A specgraph SpineNet-Mobile-49XS with a dynamic input size (cheap to build; shared, do not load into)."""
    return specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS", input_size=(H, W))


def images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, (batch, height, width, 3)).astype(np.float32)


def max_rel_diff(ref: dict[str, Any], out: dict[str, Any]) -> dict[str, float]:
    """``max|out - ref| / max|ref|`` per level."""
    result = {}
    for level, r in ref.items():
        r, o = np.asarray(r), np.asarray(out[level])
        assert r.shape == o.shape, (level, r.shape, o.shape)
        result[level] = float(np.abs(o - r).max() / np.abs(r).max())
    return result


@pytest.fixture(scope="session")
def make_images() -> Any:
    return images


@pytest.fixture(scope="session")
def rel_diff() -> Any:
    return max_rel_diff


@pytest.fixture(name="randomize_norms")
def randomize_norms_fixture() -> Any:
    """:func:`randomize_norms` for test modules (conftest helpers are not importable here)."""
    return randomize_norms
