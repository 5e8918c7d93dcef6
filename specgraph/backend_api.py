"""The semi-public namespace for backend authors: what a ``specgraph.backends`` plugin may rely on.

A plugin provides :class:`Backend` (``compile``, ``OPTIONS``); one that also provides the hooks of
:class:`ConformingBackend` can run the conformance suite, ``specgraph.testing.BackendConformance``.

A backend translates a :class:`specgraph.Plan`; before it allocates anything it should call
:func:`check_options` on the shared options and :func:`check_memory` on the plan (both
first-party backends do). Text from a plan that reaches generated code or markup goes
through :func:`visible` (and the format's own escaping); identifiers through
:class:`Namespace`. File artefacts name a level's output :func:`output_name` (``level_3``), a
decoder's input :func:`input_name` (``features_3``).
Everything here keeps its signature within a minor version.
"""

from ._activations import ACTIVATIONS, canonical_activation
from ._activations import FORMULAS as ACTIVATION_FORMULAS
from ._codegen import CodegenError, Namespace, header, render_template
from ._features import Feature, FeatureInfo
from ._fusions import FUSIONS, FusionMethod, fusion_weight_shape
from ._memory import available_memory, check_memory, format_bytes
from ._mg_blocks import (
    MODELGARDEN_BACKBONES,
    MODELGARDEN_BLOCKS,
    MODELGARDEN_DECODERS,
    DecoderVariable,
    ModelGardenBackbone,
    ModelGardenBlock,
    is_op_block,
    modelgarden_backbone,
    modelgarden_decoder_variables,
    modelgarden_parts,
    modelgarden_plan,
)
from ._naming import input_name, output_name
from ._options import COMMON_OPTIONS, check_options, check_plan_matches, frozen_nodes
from ._plan import UNIT_TYPES
from ._planner import levels_of, parse_levels
from ._protocol import Backend, ConformingBackend
from ._slots import fuse_slot, op_slot, unit_op_slot, unit_slot
from ._text import brief, first_unsafe, visible
from ._weights import LoadReport, select_weights

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_FORMULAS",
    "Backend",
    "COMMON_OPTIONS",
    "CodegenError",
    "DecoderVariable",
    "ConformingBackend",
    "FUSIONS",
    "Feature",
    "FeatureInfo",
    "FusionMethod",
    "LoadReport",
    "MODELGARDEN_BACKBONES",
    "MODELGARDEN_BLOCKS",
    "MODELGARDEN_DECODERS",
    "ModelGardenBackbone",
    "ModelGardenBlock",
    "Namespace",
    "UNIT_TYPES",
    "available_memory",
    "brief",
    "canonical_activation",
    "check_memory",
    "check_options",
    "check_plan_matches",
    "first_unsafe",
    "format_bytes",
    "frozen_nodes",
    "fuse_slot",
    "fusion_weight_shape",
    "header",
    "input_name",
    "is_op_block",
    "levels_of",
    "modelgarden_backbone",
    "modelgarden_decoder_variables",
    "modelgarden_parts",
    "modelgarden_plan",
    "op_slot",
    "output_name",
    "parse_levels",
    "render_template",
    "select_weights",
    "unit_op_slot",
    "unit_slot",
    "visible",
]
