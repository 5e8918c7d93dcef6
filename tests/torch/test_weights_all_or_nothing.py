"""Every failed load raises one specgraph.WeightsError with located problems and leaves the model bit-identical.

The bad entry is the source's *last* one, so a loader that copied before checking would
have overwritten everything before it. The refusals of ``load_structural`` (mappings and
``.npz`` files) are in the backend conformance suite (``specgraph.testing``), run for both backends.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import specgraph_torch
import torch

import specgraph
from specgraph.testing import (
    UNREADABLE_NPZ,
    WEIGHT_ROUTES,
    assert_weights_refused,
    corrupt_weights,
    unreadable_npz,
)

SMALL = Path(__file__).parents[1] / "data" / "small.toml"


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if after[k].dtype != before[k].dtype or not torch.equal(after[k], before[k])]
    assert not changed, changed[:5]


# --- load_structural: a specgraph model and .npz files only (fast) ---


@pytest.fixture(scope="module")
def small():
    """A small specgraph model and another one's weights (a different random init) to load into it."""
    plan = specgraph.plan(specgraph.load(str(SMALL)), input_size=(64, 64))
    model = specgraph.compile(plan, backend="torch")
    torch.manual_seed(1)
    source = specgraph_torch.to_structural(specgraph.compile(plan, backend="torch"))
    return model, source


def test_structural_converts_float64_and_integer_sources(small):
    """The control: a good source does load (so the refusals, here and in the conformance suite,
    are for the right reason)."""
    model, source = small
    plan = model.plan
    fresh = specgraph.compile(plan, backend="torch")
    arrays = {k: v.astype(np.float64) for k, v in source.items()}
    name = next(k for k in arrays if k.endswith("moving_mean"))
    arrays[name] = np.arange(arrays[name].size, dtype=np.int32).reshape(arrays[name].shape)
    specgraph_torch.load_structural(fresh, arrays)
    loaded = specgraph_torch.to_structural(fresh)
    assert all(loaded[k].dtype == np.float32 for k in loaded)
    np.testing.assert_array_equal(loaded[name], arrays[name].astype(np.float32))
    other = next(k for k in arrays if k.endswith("kernel"))
    np.testing.assert_array_equal(loaded[other], source[other])


# --- load_modelgarden_weights ---


@pytest.fixture(scope="module")
def mg_target():
    """A torch SpineNet-49S at 256x384 (the plan of the session's Model Garden reference)."""
    plan = specgraph.plan(specgraph.load("spinenet"), variant="49S", input_size=(256, 384))
    return specgraph_torch.compile(plan)


@pytest.mark.parametrize("kind", UNREADABLE_NPZ)
def test_modelgarden_unreadable_npz(mg_target, tmp_path, kind):
    path = unreadable_npz(tmp_path, kind)
    before = snapshot(mg_target)
    with pytest.raises(specgraph.WeightsError) as info:
        specgraph_torch.load_modelgarden_weights(mg_target, path)
    assert_weights_refused(info.value, file=path)
    assert_unchanged(mg_target, before)


@pytest.mark.parametrize("bad", [None, 3])
def test_modelgarden_bad_source_is_named(mg_target, bad):
    with pytest.raises(specgraph.ArgumentError, match="source"):
        specgraph_torch.load_modelgarden_weights(mg_target, bad)


def test_modelgarden_name_given_twice(mg_target):
    before = snapshot(mg_target)
    with pytest.raises(specgraph.WeightsError) as info:
        specgraph_torch.load_modelgarden_weights(mg_target, {"conv2d/kernel:0": np.zeros(1), "conv2d/kernel": 0})
    assert_weights_refused(info.value, path="conv2d/kernel")
    assert_unchanged(mg_target, before)


@pytest.fixture(scope="module")
def mg_arrays(modelgarden):
    mg, _ = modelgarden("spinenet", "49S", (256, 384))
    return {w.name: w.numpy() for w in mg.weights}


@pytest.mark.slow
@pytest.mark.modelgarden
@pytest.mark.parametrize(("route", "kind"), WEIGHT_ROUTES)
def test_modelgarden_bad_entry_loads_nothing(mg_target, mg_arrays, tmp_path, route, kind):
    name = list(mg_arrays)[-1]
    arrays = corrupt_weights(mg_arrays, kind, name)
    if route == "npz":
        np.savez(tmp_path / "w.npz", **arrays)
        arrays = str(tmp_path / "w.npz")
    before = snapshot(mg_target)
    with pytest.raises(specgraph.WeightsError) as info:
        specgraph_torch.load_modelgarden_weights(mg_target, arrays)
    assert_weights_refused(info.value, path=name, file=arrays if route == "npz" else None)
    assert_unchanged(mg_target, before)


@pytest.mark.slow
@pytest.mark.modelgarden
def test_modelgarden_nan_in_a_keras_model_loads_nothing(mg_target, modelgarden):
    mg, _ = modelgarden("spinenet", "49S", (256, 384))
    variable = mg.weights[-1]
    kept = variable.numpy()
    before = snapshot(mg_target)
    try:
        variable.assign(np.full(kept.shape, np.nan, kept.dtype))
        with pytest.raises(specgraph.WeightsError) as info:
            specgraph_torch.load_modelgarden_weights(mg_target, mg)
    finally:
        variable.assign(kept)  # the Model Garden model is shared by the session
    assert_weights_refused(info.value, path=variable.name.removesuffix(":0"))
    assert_unchanged(mg_target, before)


@pytest.mark.slow
@pytest.mark.modelgarden
@pytest.mark.parametrize("kind", ["missing", "directory", "not-a-checkpoint"])
def test_modelgarden_unreadable_checkpoint(mg_target, tmp_path, kind):
    pytest.importorskip("official.vision.modeling.backbones")
    path = tmp_path / "ckpt"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-a-checkpoint":
        path.write_text("not a checkpoint")
    before = snapshot(mg_target)
    with pytest.raises(specgraph.WeightsError) as info:
        specgraph_torch.load_modelgarden_weights(mg_target, str(path))
    assert_weights_refused(info.value, file=str(path))
    assert_unchanged(mg_target, before)
