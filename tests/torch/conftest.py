"""Fixtures for the torch backend tests: Model Garden reference models, built once per session."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import specgraph

try:
    import specgraph_torch  # noqa: F401
    import torch
except ImportError:  # no torch backend installed: skip this directory instead of failing collection
    collect_ignore_glob = ["test_*.py"]
else:
    # The test machine is small and shared: extra intra-op threads only spin against each other.
    torch.set_num_threads(1)


def randomize_keras(model: Any, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine params, random biases (kernels keep their random init)."""
    rng = np.random.default_rng(seed)
    draws = {
        "moving_mean": lambda s: rng.normal(0.0, 0.1, s),
        "moving_variance": lambda s: rng.uniform(0.5, 1.5, s),
        "gamma": lambda s: rng.uniform(0.5, 1.5, s),
        "beta": lambda s: rng.normal(0.0, 0.1, s),
        "bias": lambda s: rng.normal(0.0, 0.1, s),
    }
    for w in model.weights:
        var = w.name.split("/")[-1].removesuffix(":0")
        if var in draws:
            w.assign(draws[var](tuple(w.shape)).astype(np.float32))


@pytest.fixture(scope="session")
def modelgarden() -> Callable[..., tuple[Any, specgraph.Plan]]:
    """``build(spec, variant, (H, W), min_level=3)`` -> (randomised Model Garden model, its plan), cached."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    pytest.importorskip("official.vision.modeling.backbones")
    import specgraph_torch
    import tf_keras
    from official.vision.modeling.backbones import spinenet, spinenet_mobile

    cache: dict[tuple[str, str, tuple[int, int], int], tuple[Any, specgraph.Plan]] = {}

    def build(spec: str, variant: str, size: tuple[int, int], min_level: int = 3) -> tuple[Any, specgraph.Plan]:
        key = (spec, variant, size, min_level)
        if key not in cache:
            plan = specgraph.plan(specgraph.load(spec), variant=variant, input_size=size, min_level=min_level)
            cls_name, kwargs = specgraph_torch.modelgarden_kwargs(plan)
            cls = spinenet.SpineNet if cls_name == "SpineNet" else spinenet_mobile.SpineNetMobile
            model = cls(input_specs=tf_keras.layers.InputSpec(shape=[None, *size, 3]), **kwargs)
            randomize_keras(model, seed=len(cache))
            cache[key] = (model, plan)
        return cache[key]

    return build


def images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """NHWC float32 test images."""
    return np.random.default_rng(seed).normal(size=(batch, height, width, 3)).astype(np.float32)


@pytest.fixture(scope="session")
def make_images() -> Callable[..., np.ndarray]:
    return images
