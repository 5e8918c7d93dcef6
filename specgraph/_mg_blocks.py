"""Model Garden's backbones for the built-in specs, and its names for the inside of each block
type: its Keras class, the auto-generated layer name, and which of its attributes hold each unit
op's weights, in creation order.

Written here once; both backends' Model Garden weight mappings read it (the torch one by
checkpoint names, the Keras one by attributes of a live Model Garden model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import PlanError, Problem, WeightsError
from ._plan import Plan

__all__ = ["MODELGARDEN_BACKBONES", "MODELGARDEN_BLOCKS", "ModelGardenBlock", "modelgarden_backbone",
           "modelgarden_plan"]


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


# Built-in spec name -> Model Garden's backbone: (module, class, the ``SCALING_MAP`` keys its constructor takes).
# The module is imported by a backend (it needs TensorFlow); its ``SCALING_MAP`` is the variant table.
MODELGARDEN_BACKBONES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "spinenet": ("official.vision.modeling.backbones.spinenet", "SpineNet",
                 ("endpoints_num_filters", "resample_alpha", "block_repeats", "filter_size_scale")),
    "spinenet_mobile": ("official.vision.modeling.backbones.spinenet_mobile", "SpineNetMobile",
                        ("endpoints_num_filters", "block_repeats", "filter_size_scale")),
}


def modelgarden_backbone(plan: Plan, scaling_maps: Callable[[str], Mapping[str, Mapping[str, Any]]]
                         ) -> tuple[str, str, dict[str, Any]]:
    """Model Garden's module, class name and constructor arguments for ``plan``'s network.

    ``scaling_maps(module)`` returns that Model Garden module's ``SCALING_MAP`` (the backend imports it).
    A :class:`WeightsError` when Model Garden has no such spec or variant.
    """
    entry = MODELGARDEN_BACKBONES.get(plan.spec_name)
    scaling = scaling_maps(entry[0]).get(plan.variant) if entry is not None else None
    if entry is None or scaling is None:
        raise WeightsError(Problem("no Model Garden model has this spec and variant",
                                   f"{plan.spec_name} {plan.variant}"))
    common = {"min_level": plan.min_level, "max_level": plan.max_level, "activation": plan.activation,
              "norm_momentum": plan.norm_momentum, "norm_epsilon": plan.norm_epsilon}
    return entry[0], entry[1], {**common, **{key: scaling[key] for key in entry[2]}}


def modelgarden_plan(plan: Plan) -> Plan:
    """What Model Garden builds for ``plan``: endpoints at every level of ``min_level..max_level``.

    A level selection (``levels=[3, 5]``) is the same network less some endpoints and the blocks
    only they need; Model Garden has no such option, so its layers (and name counters) are those
    of the contiguous plan, which the plan rebuilds from its own pruned nodes (``Plan.contiguous``),
    so a spec read from a file works too. A :class:`WeightsError` when it cannot.
    """
    try:
        return plan.contiguous()
    except PlanError as exc:
        levels = [int(level) for level, _ in plan.endpoints]
        raise WeightsError(Problem(f"Model Garden weights for levels {levels} need the network of levels "
                                   f"{plan.min_level}..{plan.max_level}: {exc.problems[0].message}",
                                   f"{plan.spec_name} {plan.variant}")) from None
