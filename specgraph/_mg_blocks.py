"""Model Garden's names for the inside of each block type: its Keras class, the auto-generated
layer name, and which of its attributes hold each unit op's weights, in creation order.

Written here once; both backends' Model Garden weight mappings read it (the torch one by
checkpoint names, the Keras one by attributes of a live Model Garden model).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MODELGARDEN_BLOCKS", "ModelGardenBlock"]


@dataclass(frozen=True)
class ModelGardenBlock:
    keras_class: str  # ``official.vision.modeling.layers.nn_blocks`` class
    layer_name: str  # Keras's name for the n-th one: ``layer_name`` then ``layer_name_n``
    # (unit op role, conv attribute, norm attribute), in the order Model Garden creates them
    convs: tuple[tuple[str, str, str], ...]
    # the squeeze-excitation: (unit op role, layer attribute, reduce conv attribute, expand conv attribute);
    # its convs are created after ``convs``, when the block is first called
    squeeze_excite: tuple[str, str, str, str] | None = None

    def conv_attributes(self, role: str) -> tuple[str, str] | None:
        """(conv, norm) attribute of the op ``role``; None when the block has no such conv."""
        return next(((conv, norm) for r, conv, norm in self.convs if r == role), None)


_SHORTCUT = ("shortcut", "_shortcut", "_norm0")

# Unit type (``specgraph.Unit.type``) -> Model Garden's block.
MODELGARDEN_BLOCKS: dict[str, ModelGardenBlock] = {
    "bottleneck": ModelGardenBlock("BottleneckBlock", "bottleneck_block", (
        _SHORTCUT, ("conv1", "_conv1", "_norm1"), ("conv2", "_conv2", "_norm2"), ("conv3", "_conv3", "_norm3"))),
    "residual": ModelGardenBlock("ResidualBlock", "residual_block", (
        _SHORTCUT, ("conv1", "_conv1", "_norm1"), ("conv2", "_conv2", "_norm2"))),
    "mbconv": ModelGardenBlock("InvertedBottleneckBlock", "inverted_bottleneck_block", (
        ("expand", "_conv0", "_norm0"), ("depthwise", "_conv1", "_norm1"), ("project", "_conv2", "_norm2")),
        squeeze_excite=("se", "_squeeze_excitation", "_se_reduce", "_se_expand")),
}
