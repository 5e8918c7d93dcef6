"""A source that does not fit raises one error listing every problem and loads nothing."""

from __future__ import annotations

import numpy as np
import pytest
import specgraph_torch
import torch

import specgraph

pytestmark = [pytest.mark.slow, pytest.mark.modelgarden]


def _arrays(mg) -> dict[str, np.ndarray]:
    return {w.name: w.numpy() for w in mg.weights}


def test_wrong_checkpoint_lists_all_problems_and_loads_nothing(modelgarden, tmp_path):
    mg, plan = modelgarden("spinenet", "49S", (256, 384))
    arrays = _arrays(mg)
    top = sorted(n for n in arrays if n.startswith("conv2d") and n.count("/") == 1)
    # Keras numbers layers per process: the third bottleneck block is bottleneck_block_2 only when this
    # is the first Model Garden model built, so find it by its number.
    blocks = sorted({n.split("/")[0] for n in arrays if n.startswith("bottleneck_block")},
                    key=lambda b: int(b.rpartition("_")[2]) if b[-1].isdigit() else 0)
    missing, wrong = top[3], f"{blocks[2]}/conv2d_1/kernel:0"
    assert wrong in arrays
    del arrays[missing]
    arrays[wrong] = np.zeros((3, 3, 41, 40), np.float32)  # one output channel short
    arrays["extra_layer/kernel:0"] = np.zeros((1,), np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)

    model = specgraph_torch.compile(plan)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(specgraph_torch.WeightsError) as info:
        specgraph_torch.load_modelgarden_weights(model, str(tmp_path / "bad.npz"))
    err = info.value
    assert specgraph_torch.WeightsError is specgraph.WeightsError  # the old name still works
    assert isinstance(err, specgraph.BackendError)
    assert all(isinstance(p, specgraph.Problem) and p.path and p.message for p in err.problems)
    paths = {p.path for p in err.problems}
    assert missing.removesuffix(":0") in paths
    assert wrong.removesuffix(":0") in paths
    assert "extra_layer/kernel" in paths
    assert len(err.problems) == 3, str(err)
    assert "[3, 3, 41, 40]" in str(err)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_dynamic_width_modelgarden_model_lacks_sp10(modelgarden):
    """Model Garden built without a static width drops sp10; the loader names what is missing."""
    import tf_keras
    from official.vision.modeling.backbones import spinenet

    _, plan = modelgarden("spinenet", "49S", (256, 384))
    _, kwargs = specgraph_torch.modelgarden_kwargs(plan)
    dynamic = spinenet.SpineNet(input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]), **kwargs)
    with pytest.raises(specgraph_torch.WeightsError) as info:
        specgraph_torch.load_modelgarden_weights(specgraph_torch.compile(plan), dynamic)
    assert all(p.path for p in info.value.problems)  # the Keras variable names
    keys = {p.message for p in info.value.problems}
    assert all("missing" in m for m in keys)
    assert any("nodes.sp10." in m for m in keys)
    assert all("nodes.sp10." in m for m in keys)
