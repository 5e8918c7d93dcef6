"""The torch model computes what Model Garden computes, given Model Garden's weights."""

from __future__ import annotations

import numpy as np
import pytest
import specgraph_torch
import torch

pytestmark = [pytest.mark.slow, pytest.mark.modelgarden]

CASES = [
    ("spinenet", "49S", (256, 384), 3),
    ("spinenet_mobile", "49XS", (256, 384), 3),
    ("spinenet", "49S", (128, 128), 3),
    # min_level 4 prunes sp12 in the middle of the network; Model Garden still creates it.
    ("spinenet", "49S", (128, 128), 4),
]


def _relative_errors(mg, model, x: np.ndarray) -> dict[str, float]:
    ref = mg(x, training=False)
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    assert sorted(out) == sorted(ref)
    errors = {}
    for level in ref:
        r = ref[level].numpy().transpose(0, 3, 1, 2)
        assert out[level].shape == r.shape, level
        errors[level] = float(np.abs(out[level].numpy() - r).max() / np.abs(r).max())
    return errors


@pytest.mark.parametrize(("spec", "variant", "size", "min_level"), CASES)
def test_parity_with_modelgarden(modelgarden, make_images, spec, variant, size, min_level):
    mg, plan = modelgarden(spec, variant, size, min_level)
    assert sorted(mg.output_specs) == [str(lv) for lv in range(min_level, 8)]
    model = specgraph_torch.compile(plan)
    specgraph_torch.load_modelgarden_weights(model, mg)
    errors = _relative_errors(mg, model, make_images(2, *size))
    print(spec, variant, size, min_level, {k: f"{v:.1e}" for k, v in sorted(errors.items())})
    assert max(errors.values()) <= 1e-4, errors
    # The outputs are not trivially small (random BN stats and biases make them non-degenerate).
    assert all(np.isfinite(v) for v in errors.values())


def test_random_init_differs_from_modelgarden(modelgarden, make_images):
    """Guard for the parity test: without loading, the outputs do not match."""
    mg, plan = modelgarden("spinenet_mobile", "49XS", (256, 384))
    errors = _relative_errors(mg, specgraph_torch.compile(plan), make_images(2, 256, 384))
    assert min(errors.values()) > 1e-2


def test_load_from_tf_checkpoint_and_npz(modelgarden, make_images, tmp_path):
    import tensorflow as tf

    mg, plan = modelgarden("spinenet_mobile", "49XS", (256, 384))
    prefix = tf.train.Checkpoint(model=mg).write(str(tmp_path / "ckpt" / "mg"))
    from_ckpt = specgraph_torch.load_modelgarden_weights(specgraph_torch.compile(plan), prefix)
    np.savez(tmp_path / "mg.npz", **{w.name: w.numpy() for w in mg.weights})
    from_npz = specgraph_torch.load_modelgarden_weights(specgraph_torch.compile(plan), str(tmp_path / "mg.npz"))
    for model in (from_ckpt, from_npz):
        errors = _relative_errors(mg, model, make_images(2, 256, 384, seed=3))
        assert max(errors.values()) <= 1e-4, errors


def test_training_mode_parity(modelgarden, make_images):
    """Batch statistics in training mode, and the moving averages they update, match too.

    Looser bound than inference: TF's fused batch norm computes batch variance less
    accurately (~1e-5 relative per layer, measured against float64; torch ~5e-7), and
    that compounds over ~80 normalisations. A semantic slip (unbiased variance, eps)
    is a percent-level error at the coarse levels.
    """
    mg, plan = modelgarden("spinenet_mobile", "49XS", (384, 384))  # its own model: training updates it
    model = specgraph_torch.load_modelgarden_weights(specgraph_torch.compile(plan), mg).train()
    x = make_images(2, 384, 384, seed=5)
    ref = mg(x, training=True)
    out = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    errors = {}
    for level in ref:
        r = ref[level].numpy().transpose(0, 3, 1, 2)
        errors[level] = float(np.abs(out[level].detach().numpy() - r).max() / np.abs(r).max())
    print("training", {k: f"{v:.1e}" for k, v in sorted(errors.items())})
    assert max(errors.values()) <= 2e-3, errors
    updated = specgraph_torch.load_modelgarden_weights(specgraph_torch.compile(plan), mg)
    mine, theirs = model.state_dict(), updated.state_dict()
    for key in (k for k in mine if k.endswith(("running_mean", "running_var"))):
        assert torch.allclose(mine[key], theirs[key], rtol=1e-3, atol=1e-4), key
