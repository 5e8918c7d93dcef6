"""Every failed ``load_weights`` raises one specgraph.WeightsError with located problems and leaves every
variable (BN moving statistics included) bit-identical.

The bad entry is the source's *last* one, so a loader that assigned before checking would
have overwritten everything before it. The refusals of ``load_structural`` (mappings and
``.npz`` files) are in the backend conformance suite (``specgraph.testing``), run for both backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import specgraph_tensorflow as sgt
import tensorflow as tf

import specgraph
from specgraph.testing import (
    assert_weights_refused,
)

H, W = 256, 384


def snapshot(model: Any) -> list[np.ndarray]:
    """Every variable, trainable or not (BN moving statistics too)."""
    return [v.numpy().copy() for v in model.weights]


def assert_unchanged(model: Any, before: list[np.ndarray]) -> None:
    after = snapshot(model)
    assert len(after) == len(before)
    changed = [v.name for v, a, b in zip(model.weights, after, before, strict=True)
               if a.dtype != b.dtype or a.tobytes() != b.tobytes()]
    assert not changed, changed[:5]


@pytest.fixture(scope="module")
def small():
    """A Mobile-49XS and another one's weights (a different random init) to load into it."""
    build = lambda: specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS",  # noqa: E731
                                      input_size=(128, 128))
    model = build()
    return model, {k: v.numpy() for k, v in sgt.weights_dict(build()).items()}


def test_the_old_error_name_is_the_same_class():
    assert sgt.WeightMismatchError is specgraph.WeightsError is sgt.WeightsError


def test_float64_and_integer_sources_are_converted(small):
    """The control: a good source does load (so the refusals, here and in the conformance suite,
    are for the right reason)."""
    _, source = small
    model = specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS", input_size=(128, 128))
    arrays = {k: v.astype(np.float64) for k, v in source.items()}
    name = next(k for k in arrays if k.endswith("moving_mean"))
    arrays[name] = np.arange(arrays[name].size, dtype=np.int32).reshape(arrays[name].shape)
    sgt.load_weights(model, arrays)
    loaded = sgt.weights_dict(model)
    assert all(v.dtype == tf.float32 for v in loaded.values())
    np.testing.assert_array_equal(loaded[name].numpy(), arrays[name].astype(np.float32))
    other = next(k for k in arrays if k.endswith("kernel"))
    np.testing.assert_array_equal(loaded[other].numpy(), source[other])


# --- the Model Garden routes: a model object and a checkpoint ---


@pytest.fixture(scope="module")
def mg_target():
    return specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS", input_size=(H, W))


@pytest.fixture
def poisoned(mg_mobile_49xs):
    """The session's Model Garden model with non-finite values in its last variable, restored afterwards."""
    variable = mg_mobile_49xs.weights[-1]
    kept = variable.numpy()
    values = kept.copy()
    values.flat[-1], values.flat[0] = np.nan, np.inf
    variable.assign(values)
    yield mg_mobile_49xs
    variable.assign(kept)


@pytest.mark.slow
@pytest.mark.modelgarden
def test_non_finite_modelgarden_model_loads_nothing(mg_target, poisoned):
    before = snapshot(mg_target)
    with pytest.raises(specgraph.WeightsError) as info:
        sgt.load_weights(mg_target, poisoned)
    assert_weights_refused(info.value)
    assert len(info.value.problems) == 1 and "1 NaN, 1 +inf" in info.value.problems[0].message
    assert_unchanged(mg_target, before)


@pytest.mark.slow
@pytest.mark.modelgarden
def test_non_finite_checkpoint_loads_nothing(mg_target, poisoned, tmp_path):
    path = tf.train.Checkpoint(backbone=poisoned).write(str(tmp_path / "ckpt"))
    before = snapshot(mg_target)
    with pytest.raises(specgraph.WeightsError) as info:
        sgt.load_weights(mg_target, path)
    assert_weights_refused(info.value)
    assert len(info.value.problems) == 1 and "non-finite" in info.value.problems[0].message
    assert_unchanged(mg_target, before)


@pytest.mark.parametrize("kind", ["missing", "directory", "not-a-checkpoint"])
def test_unreadable_checkpoint(mg_target, tmp_path, kind):
    path: Path = tmp_path / "ckpt"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-a-checkpoint":
        path.write_text("not a checkpoint")
    before = snapshot(mg_target)
    with pytest.raises(specgraph.WeightsError) as info:
        sgt.load_weights(mg_target, str(path))
    assert_weights_refused(info.value, file=str(path))
    assert_unchanged(mg_target, before)
