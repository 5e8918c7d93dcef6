"""The spec schema: pydantic models shared by TOML and YAML files.

A spec describes one family (stem, body blocks, base filters, resampling, fusion)
and a table of variants that scale it. Field documentation lives in
``docs/spec-reference.md``; keep the two in step.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    field_validator,
    model_validator,
)

from ._activations import ACTIVATIONS
from ._errors import PlanError
from ._fusions import FUSION_NAMES
from ._text import brief, first_unsafe
from ._writer import dumps

__all__ = [
    "BLOCK_TYPES",
    "MAX_LEVEL",
    "Block",
    "BlockOp",
    "Cell",
    "Endpoints",
    "ExternalInput",
    "Fusion",
    "Norm",
    "Resample",
    "Spec",
    "Stem",
    "StemBlock",
    "StemConv",
    "StemPool",
    "Variant",
    "missing_fields",
]

MAX_LEVEL = 12  # stride 4096; far beyond any detector, but keeps sizes and loops bounded
BLOCK_TYPES = ("residual", "bottleneck", "mbconv")
_NAME_RE = re.compile(r"[^\s.]{1,64}")  # whole-string match only; dots would clash with module paths
MAX_VARIANTS = 256
MAX_TEXT = 16_384  # the description; the loader holds every string of a file to the same cap


def _check_name(value: str | None) -> str | None:
    """The one rule for every name that reaches an output (spec, block, variant)."""
    if value is None:
        return None
    unsafe = first_unsafe(value)
    if unsafe:
        raise ValueError(f"a name holds no control, format or invisible character; found {unsafe}")
    if not _NAME_RE.fullmatch(value):
        raise ValueError("a name is 1 to 64 characters with no whitespace and no '.'")
    return value


def _exact_int(value: object) -> object:
    # Literal[1, 2] would take True and 2.0 (they compare equal); a spec means the integer.
    if isinstance(value, bool | float):
        raise ValueError(f"expected an integer, not a {type(value).__name__}")
    return value


def _separable(value: object) -> object:
    # One message for the union (pydantic would report each member's failure at a path of its own).
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and len(value) <= 8 and all(isinstance(v, str) for v in value):
        for v in value:
            _check_name(v)
        return value
    raise ValueError("Input should be a valid boolean (every op block), or a list of at most 8 part names "
                     "(their op blocks)")


def _level_key(value: object) -> object:
    # TOML and JSON keys are strings: "3" means level 3 (ASCII digits only; not "٣" or "3_0").
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,2}", value):
        return int(value)
    return value


# Strict: a bool or a string is not taken for a number, nor a number for a bool.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # integers are accepted (3 means 3.0)
Flag = Annotated[bool, Strict()]
Name = Annotated[str, AfterValidator(_check_name)]
BlockType = Literal["residual", "bottleneck", "mbconv"]
Level = Annotated[Int, Field(ge=0, le=MAX_LEVEL)]
LevelKey = Annotated[Int, BeforeValidator(_level_key), Field(ge=0, le=MAX_LEVEL)]
Channels = Annotated[Int, Field(ge=1, le=16384)]
Kernel = Annotated[Int, Field(ge=1, le=15)]
Stride = Annotated[Literal[1, 2], BeforeValidator(_exact_int)]
Momentum = Annotated[Float, Field(gt=0.0, lt=1.0)]  # Keras's convention: the moving average keeps this much
Epsilon = Annotated[Float, Field(gt=0.0, le=1.0)]
DropRate = Annotated[Float, Field(ge=0.0, lt=1.0)]
# The fusion methods (specgraph/_fusions.py says what each computes).
FusionMethod = Literal[FUSION_NAMES]  # type: ignore[valid-type]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class StemConv(_Model):
    """The stem's first convolution (+ norm + activation)."""

    filters: Channels
    kernel: Kernel = 3
    stride: Stride = 2
    scale_filters: Flag = False  # multiply ``filters`` by the variant's filter_size_scale


class StemPool(_Model):
    """An optional max-pool after the stem conv."""

    kernel: Kernel = 3
    stride: Stride = 2


Repeats = Annotated[Int, Field(ge=1, le=64)]


class StemBlock(_Model):
    """One block group of the stem chain; consumes the previous one's output (the stem conv's for the
    first). One level above the previous, its first unit strides down (ResNet's stages)."""

    name: Name | None = None
    level: Level
    type: BlockType
    repeats: Repeats | None = None  # units in the group; default: the variant's block_repeats
    output: Flag = False  # its output is the endpoint of its level


class Stem(_Model):
    conv: StemConv
    pool: StemPool | None = None
    blocks: Annotated[list[StemBlock], Field(min_length=1, max_length=16)]


class BlockOp(_Model):
    """One op of an op block (a block given as ``ops``): FPN's, NAS-FPN's and BiFPN's nodes.

    ``conv`` / ``separable_conv`` give the block's width (no norm, no activation of their own);
    ``norm`` is batch norm; ``act`` the spec's activation; ``maxpool`` a SAME max-pool.
    """

    op: Literal["conv", "separable_conv", "norm", "act", "maxpool"]
    kernel: Kernel | None = None  # conv / separable_conv / maxpool; default 3
    stride: Stride | None = None  # conv / separable_conv / maxpool; default 1 (2 for maxpool)
    bias: Flag | None = None  # conv / separable_conv; default false
    activation: str | None = None  # act; default: the spec's activation

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str | None) -> str | None:
        if value is not None and value not in ACTIVATIONS:
            raise ValueError(f"unknown activation {value!r}; known: {', '.join(ACTIVATIONS)}")
        return value

    @property
    def level_step(self) -> int:
        """The levels the op moves its input up: 1 for a stride of 2 (a max-pool's default), else 0."""
        return (self.stride or (2 if self.op == "maxpool" else 1)).bit_length() - 1

    @model_validator(mode="after")
    def _fields_of_op(self) -> BlockOp:
        given = [f for f in ("kernel", "stride", "bias", "activation") if getattr(self, f) is not None]
        allowed = {"conv": ("kernel", "stride", "bias"), "separable_conv": ("kernel", "stride", "bias"),
                   "maxpool": ("kernel", "stride"), "act": ("activation",)}.get(self.op, ())
        extra = [f for f in given if f not in allowed]
        if extra:
            raise ValueError(f"op {self.op!r} takes no {', '.join(extra)}"
                             + (f" (it takes {', '.join(allowed)})" if allowed else ""))
        return self


class Block(_Model):
    """A body block: a fused, resampled set of parents, then a block group (``type``) or single ops (``ops``)."""

    name: Name | None = None
    level: Level
    type: BlockType | None = None
    ops: Annotated[list[BlockOp], Field(max_length=16)] | None = None  # [] fuses the inputs only
    inputs: Annotated[list[Annotated[str, Field(max_length=256)]], Field(min_length=1, max_length=8)]
    output: Flag = False
    repeats: Repeats | None = None  # units in the group; default: the variant's block_repeats
    # The block's width, as it is (not scaled by the variant), or the name of a width in each variant's `widths`;
    # default: [filters] of its level, scaled.
    filters: Channels | Name | None = None
    fusion: FusionMethod | None = None  # default: [fusion] method
    # The part of a composed network the block belongs to (a name in the spec's `parts`); default: the last part.
    part: Name | None = None

    @model_validator(mode="after")
    def _type_or_ops(self) -> Block:
        if (self.type is None) == (self.ops is None):
            raise ValueError("a block has a `type` (a block group: residual, bottleneck, mbconv) or `ops` (single "
                             "ops, e.g. [{ op = \"conv\", kernel = 3 }]), exactly one of the two")
        if self.ops is not None and self.repeats is not None:
            raise ValueError("`repeats` counts the units of a block group; an op block (`ops`) has none")
        return self


class Cell(_Model):
    """Blocks repeated ``repeats`` times, each repetition with its own weights (NAS-FPN's and BiFPN's cells), or
    with ``shared = true`` all running the first repetition's weights (a recurrent cell).

    The blocks are written once, as the first repetition: a block input named in ``inputs`` is, in every
    later repetition, the previous repetition's block at the same place in ``outputs``. Repetition r of
    block ``b`` of cell ``c`` is the node ``c_r/b``; ``output = true`` marks the last repetition's block.
    Shared weights need every repetition's blocks to take what the first's take: inputs of the cell's widths.
    """

    name: Name
    repeats: Annotated[Int, Field(ge=1, le=32)] = 1  # a variant's `repeats` table overrides it by the cell's name
    inputs: Annotated[list[Annotated[str, Field(max_length=256)]], Field(min_length=1, max_length=16)]
    outputs: Annotated[list[Annotated[str, Field(max_length=256)]], Field(min_length=1, max_length=16)]
    blocks: Annotated[list[Block], Field(min_length=1, max_length=256)]
    part: Name | None = None  # as a block's `part`
    shared: Flag = False  # every repetition runs the first repetition's weights


class ExternalInput(_Model):
    """A feature map a decoder takes from outside (a backbone's endpoint of ``level``), declared by a decoder spec.

    In a composition the backbone's endpoint of that level takes its place, whatever its channels; ``filters``
    are the channels the decoder expects when it is used alone."""

    name: Name
    level: Level
    filters: Channels


class LevelOffset(_Model):
    """Levels from the block's own level + ``offset[0]`` to its level + ``offset[1]``."""

    offset: tuple[Annotated[Int, Field(ge=-MAX_LEVEL, le=MAX_LEVEL)], Annotated[Int, Field(ge=-MAX_LEVEL,
                                                                                              le=MAX_LEVEL)]]

    @model_validator(mode="after")
    def _ordered(self) -> LevelOffset:
        if self.offset[0] > self.offset[1]:
            raise ValueError(f"offset {list(self.offset)}: write it low to high, e.g. [-1, 2]")
        return self


class ParentChoice(_Model):
    """``k`` distinct parents among the nodes before the block (the stem blocks first), or among the last
    ``window`` of them."""

    k: Annotated[Int, Field(ge=1, le=8)] = 2
    window: Annotated[Int, Field(ge=1, le=1024)] | None = None


class BlockChoices(_Model):
    """What may vary in the named body blocks (``"*"``: every body block): each field lists the candidates."""

    blocks: Annotated[list[Annotated[str, Field(max_length=256)]], Field(min_length=1, max_length=1024)]
    level: Annotated[list[Level], Field(min_length=1, max_length=MAX_LEVEL + 1)] | LevelOffset | None = None
    type: Annotated[list[BlockType], Field(min_length=1, max_length=3)] | None = None
    inputs: ParentChoice | None = None
    output: Annotated[list[Flag], Field(min_length=1, max_length=2)] | None = None


class Permutation(_Model):
    """The named body blocks take each other's places in the block order, in any permutation."""

    blocks: Annotated[list[Annotated[str, Field(max_length=256)]], Field(min_length=2, max_length=1024)]


class ScalarChoices(_Model):
    """Candidates for the searched variant's scalars."""

    filter_size_scale: Annotated[list[Annotated[Float, Field(gt=0.0, le=16.0)]], Field(min_length=1)] | None = None
    resample_alpha: Annotated[list[Annotated[Float, Field(gt=0.0, le=16.0)]], Field(min_length=1)] | None = None
    block_repeats: Annotated[list[Repeats], Field(min_length=1)] | None = None
    endpoints_num_filters: Annotated[list[Channels], Field(min_length=1)] | None = None


class Search(_Model):
    """A search space on the spec: the spec is its starting point, these say what may vary. A sample is an
    ordinary spec (without ``search``), of the one variant ``variant`` (default: the spec's default)."""

    variant: Name | None = None
    blocks: Annotated[list[BlockChoices], Field(max_length=64)] = []
    permute: Annotated[list[Permutation], Field(max_length=64)] = []
    scalars: ScalarChoices = ScalarChoices()
    # Draws per sample: a draw the validator or the planner refuses is drawn again, up to this many times.
    tries: Annotated[Int, Field(ge=1, le=100_000)] = 200


class Resample(_Model):
    """How a parent is brought to a block's level and channels.

    ``squeeze``: a 1x1 conv+norm+act to ``int(c * resample_alpha)`` first, where c is
    the parent's channels, divided by 4 for a bottleneck parent (SpineNet).
    ``down``: ``conv_maxpool`` = one 3x3/s2 conv+norm+act, then 3x3/s2 max-pools for
    the remaining levels (SpineNet); ``depthwise`` = one 3x3/s2 depthwise
    conv+norm+act per level (SpineNet-Mobile); ``conv`` = one 3x3/s2 conv+norm+act
    per level. ``up``: nearest-neighbour by ``2**levels``.
    A final 1x1 conv+norm (no activation) gives the target block's channels.
    """

    squeeze: Flag = True
    down: Literal["conv_maxpool", "depthwise", "conv"] = "conv_maxpool"
    up: Literal["nearest", "bilinear"] = "nearest"
    # Op blocks: the max-pool that brings a finer input down by a stride s has kernel s (NAS-FPN) or s + 1 (BiFPN).
    pool_kernel: Literal["stride", "stride+1"] = "stride"


class Fusion(_Model):
    """How a block's resampled parents are combined."""

    method: FusionMethod = "sum"
    activation: Flag = True  # apply the activation after the sum
    # Model Garden's rule: an output block also sums, unresampled, every earlier
    # block that nothing consumed yet and that has its level and channels.
    merge_unused_into_outputs: Flag = False


class Norm(_Model):
    type: Literal["batch_norm"] = "batch_norm"
    momentum: Momentum = 0.99
    epsilon: Epsilon = 1e-3


class Endpoints(_Model):
    """Default endpoint levels; ``plan`` may override them."""

    min_level: Level = 3
    max_level: Level = 7
    # A 1x1 conv + norm + act to the variant's endpoints_num_filters on every endpoint (SpineNet);
    # false: the endpoints are the output blocks' features as they are (ResNet).
    conv: Flag = True


class Variant(_Model):
    """One row of the scaling table (Model Garden's ``SCALING_MAP``)."""

    endpoints_num_filters: Channels | None = None  # needed when [endpoints] conv = true
    filter_size_scale: Annotated[Float, Field(gt=0.0, le=16.0)] = 1.0
    resample_alpha: Annotated[Float, Field(gt=0.0, le=16.0)] = 0.5
    block_repeats: Annotated[Int, Field(ge=1, le=64)] = 1
    expand_ratio: Annotated[Float, Field(ge=1.0, le=32.0)] = 6.0
    se_ratio: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.0  # 0 = no squeeze-excitation
    # Units per named block group, over the block's own ``repeats`` and ``block_repeats``: how
    # ResNet-101 differs from ResNet-50 (``{ res4 = 23 }``).
    repeats: Annotated[dict[Name, Repeats], Field(max_length=1024)] | None = None
    # Every `conv` op of the op blocks is a separable conv (Model Garden's use_separable_conv); a list of part
    # names: those parts' op blocks only (a composition's separable decoder on a backbone with plain endpoint convs).
    separable: Annotated[bool | list[str], BeforeValidator(_separable)] = False
    # Named widths that blocks use as `filters = "<name>"` (a decoder's width per variant: BiFPN's 64..160).
    widths: Annotated[dict[Name, Channels], Field(max_length=64)] | None = None


class Spec(_Model):
    """A whole family: stem, body blocks, filters, resampling, fusion and variants."""

    name: Name
    description: Annotated[str, Field(max_length=MAX_TEXT)] = ""
    activation: str = "relu"
    default_variant: Annotated[str, Field(max_length=64)] | None = None
    # Needed with a stem; a decoder (declared `inputs`) gives its blocks' widths as their own `filters`.
    filters: dict[LevelKey, Channels] = {}
    stem: Stem | None = None  # a network starts with a stem; a decoder declares its `inputs` instead
    # A decoder's feature maps from outside; a composition (`backbone`, `decoders`) feeds a backbone's endpoints in.
    inputs: Annotated[list[ExternalInput], Field(max_length=16)] = []
    resample: Resample = Resample()
    fusion: Fusion = Fusion()
    norm: Norm = Norm()
    endpoints: Endpoints = Endpoints()
    variants: Annotated[dict[Name, Variant], Field(min_length=1, max_length=MAX_VARIANTS)]
    # Empty for a backbone that is only a stem chain (ResNet).
    blocks: Annotated[list[Block], Field(max_length=1024)] = []
    cells: Annotated[list[Cell], Field(max_length=16)] = []
    # A composed network's parts in order (backbone first, then each decoder): the plan's endpoints are the last
    # part's output blocks; each part has its own outputs. A composition file fills it in; empty: one part.
    parts: Annotated[list[Name], Field(max_length=8)] = []
    search: Search | None = None  # what may vary (specgraph.sample, mutate, search); nothing planned reads it

    _source: object = PrivateAttr(default=None)
    _graph: object = PrivateAttr(default=None)

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        if value not in ACTIVATIONS:
            raise ValueError(f"unknown activation {value!r}; known: {', '.join(ACTIVATIONS)}")
        return value

    @model_validator(mode="after")
    def _fill_names(self) -> Spec:
        # Auto-names are positional, so they stay stable when a spec is dumped and reloaded.
        if self.stem is not None and self.inputs:
            raise ValueError("a spec has a `stem` (a network) or declared `inputs` (a decoder), not both")
        if self.stem is not None:
            stem = [b if b.name else b.model_copy(update={"name": f"stem{i + 1}"})
                    for i, b in enumerate(self.stem.blocks)]
            object.__setattr__(self.stem, "blocks", stem)
        body = [b if b.name else b.model_copy(update={"name": f"b{i + 1}"}) for i, b in enumerate(self.blocks)]
        object.__setattr__(self, "blocks", body)
        for cell in self.cells:
            named = [b if b.name else b.model_copy(update={"name": f"b{i + 1}"}) for i, b in enumerate(cell.blocks)]
            object.__setattr__(cell, "blocks", named)
        return self

    def __eq__(self, other: object) -> bool:
        # Compare the spec's content only: private caches (the graph, the source file) differ.
        return isinstance(other, Spec) and self.model_dump() == other.model_dump()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def source(self) -> str | None:
        """The file the spec was loaded from, if any."""
        return getattr(self._source, "file", None)

    def variant(self, name: str | None = None) -> tuple[str, Variant]:
        """The named variant, or the default one; raises ``PlanError`` with the known names."""
        if name is None:
            name = self.default_variant or (next(iter(self.variants)) if len(self.variants) == 1 else None)
            if name is None:
                raise PlanError(f"spec {self.name!r} has several variants; pick one of: {', '.join(self.variants)}")
        name = str(name) if isinstance(name, int) and not isinstance(name, bool) else name
        if not isinstance(name, str) or name not in self.variants:
            raise PlanError(
                f"variants: spec {self.name!r} has no variant {brief(name)}; known: {', '.join(self.variants)}"
            )
        return name, self.variants[name]

    def to_dict(self) -> dict:
        """Plain data, as a spec file would hold it (names filled in)."""
        return self.model_dump(mode="json", exclude_defaults=False)

    def dumps(self, fmt: Literal["yaml", "toml", "json"] = "yaml") -> str:
        """The spec as TOML, YAML or JSON text that ``load`` reads back to an equal spec."""
        return dumps(self, fmt)

    def _repr_svg_(self) -> str | None:  # Jupyter
        try:
            from ._render import render_svg
        except ImportError:
            return None
        from ._planner import plan

        # Jupyter shows the default variant, or the first one of a table without a default.
        return render_svg(plan(self, self.default_variant or next(iter(self.variants))))


def missing_fields(spec: Spec) -> list[tuple[tuple[str | int, ...], str]]:
    """Fields that are optional in general but needed by the rest of this spec: ``(location, why)``.

    The loader reports them as missing fields at their place in the file; the graph builder checks
    them too, for a ``Spec`` made in Python."""
    missing: list[tuple[tuple[str | int, ...], str]] = []
    if spec.stem is None and not spec.inputs:
        missing.append((("stem",), "a network starts with a stem; a decoder declares its `inputs` instead "
                                   "([[inputs]] name, level, filters)"))
    if spec.stem is not None and not spec.filters:
        missing.append((("filters",), "the base filters of each level the stem and blocks use ([filters] 3 = 64)"))
    if (spec.stem is not None and not spec.blocks and not spec.cells
            and not any(block.output for block in spec.stem.blocks)):
        missing.append((("blocks",), "at least 1 item is needed: no stem block is an output (`output = true`), "
                                     "so body blocks must give the endpoints"))
    if spec.endpoints.conv:
        for name, variant in spec.variants.items():
            if variant.endpoints_num_filters is None:
                missing.append((("variants", name, "endpoints_num_filters"),
                                "the endpoints' 1x1 convs need their filters; or set `conv = false` under "
                                "[endpoints] for bare endpoints"))
    return missing
