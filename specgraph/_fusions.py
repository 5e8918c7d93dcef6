"""The fusion methods: how a block combines its resampled inputs ``x_0 .. x_{n-1}``, written here once.

Each backend implements every method by name (``specgraph_torch._layers.FUSION_KERNELS``, the Keras
``Fuse`` layer); the stats, the planner and the schema read the table below, and the conformance suite
checks every backend against numpy versions of these formulas (``specgraph.testing.FUSION_REFERENCES``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["FUSIONS", "FUSION_NAMES", "FusionMethod", "fusion_weight_shape"]


@dataclass(frozen=True)
class FusionMethod:
    """One fusion: its formula, its trainable weights and what it needs."""

    formula: str
    # Trainable weights, initialised to 1: none, one per input, or one per input and channel (shape (n, C)).
    weights: Literal["none", "input", "input_channel"] = "none"
    min_inputs: int = 1
    # The output has the inputs' channels side by side (their sum) instead of the inputs' common width.
    concat: bool = False


# The 1e-4 is EfficientDet's (and effdet's) epsilon of fast normalised fusion.
FUSIONS: dict[str, FusionMethod] = {
    "sum": FusionMethod("x_0 + x_1 + ... (in input order)"),
    "weighted": FusionMethod("sum_i relu(w_i) x_i / (sum_j relu(w_j) + 1e-4)", weights="input"),
    "weighted_channel": FusionMethod("sum_i relu(w_ic) x_ic / (sum_j relu(w_jc) + 1e-4), per channel c",
                                     weights="input_channel"),
    "softmax": FusionMethod("sum_i softmax(w)_i x_i", weights="input"),
    "attention": FusionMethod("x_0 + x_1 * sigmoid(max over H, W of x_0) + x_2 + ... (NAS-FPN's global attention)",
                              min_inputs=2),
    "concat": FusionMethod("[x_0, x_1, ...] along the channels", concat=True),
}
FUSION_NAMES: tuple[str, ...] = tuple(FUSIONS)


def fusion_weight_shape(method: str | None, inputs: int, channels: int) -> tuple[int, ...] | None:
    """The shape of a fusion's trainable weights for ``inputs`` inputs of ``channels`` channels; None: it has none."""
    kind = FUSIONS[method].weights if method in FUSIONS else "none"
    if kind == "input":
        return (inputs,)
    if kind == "input_channel":
        return (inputs, channels)
    return None
