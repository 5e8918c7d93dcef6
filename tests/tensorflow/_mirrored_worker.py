"""MirroredStrategy equivalence run for tests/tensorflow/test_tf_distributed.py.

Run as a script, ``python _mirrored_worker.py [DTYPE]`` (default float64): MirroredStrategy needs
its two logical CPU devices configured before TensorFlow initialises, which a pytest process has
long done. Trains a compiled model (``use_sync_bn=True``) for ``STEPS`` steps on one device over
the whole global batch, and the same model from the same weights under
``MirroredStrategy(["/cpu:0", "/cpu:1"])``, each replica on half the batch, and prints one JSON
line: the largest difference ``max |a - b| / max(1, max |b|)`` of the last gradients, the weights
and the moving statistics (every replica's copy), and the replicas' batch sizes.

float64 shows the algorithm is exact. In float32, tf_keras's synchronized BN computes the variance
as E[x^2] - E[x]^2, whose cancellation on this model's low-variance channels makes the one-device
run itself ~2e-2 off its float64 twin in the gradients (see docs/distributed.md).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
tf.config.threading.set_intra_op_parallelism_threads(1)

import tf_keras  # noqa: E402

import specgraph  # noqa: E402

SPEC = Path(__file__).parent.parent / "data" / "small.toml"
SIZE = (64, 64)
GLOBAL_BATCH = 4
STEPS = 2  # step 2: updated weights, non-empty momentum slots


def global_batches(dtype: str) -> list[np.ndarray]:
    """NHWC batches, the same in every run."""
    return [np.random.default_rng(step).normal(size=(GLOBAL_BATCH, *SIZE, 3)).astype(dtype) for step in range(STEPS)]


def per_example_loss(outputs: dict[str, tf.Tensor]) -> tf.Tensor:
    """Depends on every level: the sum over levels of the mean square, per image."""
    return tf.add_n([tf.reduce_mean(tf.square(out), axis=[1, 2, 3]) for out in outputs.values()])


def train_step(model: tf_keras.Model, optimizer: Any, images: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
    """One SGD step on this replica's images: its local gradients (Keras sums them over replicas), batch size."""
    with tf.GradientTape() as tape:
        # Scaled by the global batch: the replicas' gradients then sum to those of the global mean.
        loss = tf.nn.compute_average_loss(per_example_loss(model(images, training=True)),
                                          global_batch_size=GLOBAL_BATCH)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return grads, tf.shape(images)[0]


def train(strategy: tf.distribute.Strategy, plan: specgraph.Plan, initial: list[np.ndarray],
          dtype: str) -> dict[str, Any]:
    """The last gradients summed over replicas (what the optimizer applied), every variable's value
    on every replica (``replicas[r][i]``), and the replicas' batch sizes."""
    with strategy.scope():
        model = specgraph.compile(plan, backend="tensorflow", use_sync_bn=True)
        model.set_weights(initial)
        optimizer = tf_keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    data = tf.data.Dataset.from_tensor_slices(np.concatenate(global_batches(dtype))).batch(GLOBAL_BATCH)
    # Eager steps: tracing the collectives of 64 sync BNs into a tf.function takes minutes on two
    # cores (every all-reduce is a merge_call across the replica threads); the arithmetic is the same.
    for images in strategy.experimental_distribute_dataset(data):
        grads, sizes = strategy.run(train_step, args=(model, optimizer, images))
    summed = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None).numpy() for g in grads]
    per_variable = [[v.numpy() for v in strategy.experimental_local_results(w)] for w in model.weights]
    return {"grads": summed, "replicas": [list(r) for r in zip(*per_variable, strict=True)],
            "batch sizes": [int(s) for s in strategy.experimental_local_results(sizes)],
            "moving": [i for i, w in enumerate(model.weights) if "moving_" in w.name]}


def _max_diff(ours: list[np.ndarray], ref: list[np.ndarray]) -> float:
    return max(float(np.abs(o.astype(np.float64) - r).max() / max(1.0, np.abs(r).max()))
               for o, r in zip(ours, ref, strict=True))


def main(dtype: str) -> None:
    tf_keras.backend.set_floatx(dtype)
    plan = specgraph.plan(specgraph.load(SPEC), input_size=SIZE)
    initial = specgraph.compile(plan, backend="tensorflow").get_weights()
    single = train(tf.distribute.get_strategy(), plan, initial, dtype)  # the default strategy: one device
    # ReductionToOneDevice: half the eager step time of CPU collectives here. Sync BN's statistics
    # go through the same replica-context all_reduce either way.
    mirrored = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                                    cross_device_ops=tf.distribute.ReductionToOneDevice()),
                     plan, initial, dtype)
    ref = single["replicas"][0]
    moving = set(single["moving"])

    def weights_diff(indices: list[int]) -> float:
        return max(_max_diff([w[i] for i in indices], [ref[i] for i in indices]) for w in mirrored["replicas"])

    print(json.dumps({
        "grads": _max_diff(mirrored["grads"], single["grads"]),
        "weights": weights_diff([i for i in range(len(ref)) if i not in moving]),
        "moving stats": weights_diff(sorted(moving)),
        "replica batch sizes": mirrored["batch sizes"],
    }))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "float64")
