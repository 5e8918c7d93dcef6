"""The spec schema: pydantic models shared by TOML and YAML files.

A spec describes one family (stem, body blocks, base filters, resampling, fusion)
and a table of variants that scale it. Field documentation lives in
``docs/spec-reference.md``; keep the two in step.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

__all__ = [
    "BLOCK_TYPES",
    "MAX_LEVEL",
    "Block",
    "Endpoints",
    "Fusion",
    "Norm",
    "Resample",
    "Spec",
    "Stem",
    "StemBlock",
    "StemConv",
    "StemPool",
    "Variant",
]

MAX_LEVEL = 12  # stride 4096; far beyond any detector, but keeps sizes and loops bounded
BLOCK_TYPES = ("residual", "bottleneck", "mbconv")
ACTIVATIONS = ("relu", "relu6", "swish", "silu", "hard_swish", "gelu", "elu", "sigmoid", "linear")
_NAME_RE = re.compile(r"^[^\s.]{1,64}$")  # dots would clash with module paths

BlockType = Literal["residual", "bottleneck", "mbconv"]
Level = Annotated[int, Field(ge=0, le=MAX_LEVEL)]
Channels = Annotated[int, Field(ge=1, le=16384)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _check_name(value: str | None) -> str | None:
    if value is not None and not _NAME_RE.match(value):
        raise ValueError("a name is 1 to 64 characters with no whitespace and no '.'")
    return value


class StemConv(_Model):
    """The stem's first convolution (+ norm + activation)."""

    filters: Channels
    kernel: Annotated[int, Field(ge=1, le=15)] = 3
    stride: Literal[1, 2] = 2
    scale_filters: bool = False  # multiply ``filters`` by the variant's filter_size_scale


class StemPool(_Model):
    """An optional max-pool after the stem conv."""

    kernel: Annotated[int, Field(ge=1, le=15)] = 3
    stride: Literal[1, 2] = 2


class StemBlock(_Model):
    """One stem block group; consumes the previous stem output."""

    name: str | None = None
    level: Level
    type: BlockType

    _check = field_validator("name")(_check_name)


class Stem(_Model):
    conv: StemConv
    pool: StemPool | None = None
    blocks: Annotated[list[StemBlock], Field(min_length=1, max_length=16)]


class Block(_Model):
    """A body block: a fused, resampled set of parents, then a block group."""

    name: str | None = None
    level: Level
    type: BlockType
    inputs: Annotated[list[str], Field(min_length=1, max_length=8)]
    output: bool = False

    _check = field_validator("name")(_check_name)


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

    squeeze: bool = True
    down: Literal["conv_maxpool", "depthwise", "conv"] = "conv_maxpool"
    up: Literal["nearest"] = "nearest"


class Fusion(_Model):
    """How a block's resampled parents are combined."""

    method: Literal["sum", "weighted"] = "sum"
    activation: bool = True  # apply the activation after the sum
    # Model Garden's rule: an output block also sums, unresampled, every earlier
    # block that nothing consumed yet and that has its level and channels.
    merge_unused_into_outputs: bool = False


class Norm(_Model):
    type: Literal["batch_norm"] = "batch_norm"
    momentum: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.99
    epsilon: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3


class Endpoints(_Model):
    """Default endpoint levels; ``plan`` may override them."""

    min_level: Level = 3
    max_level: Level = 7


class Variant(_Model):
    """One row of the scaling table (Model Garden's ``SCALING_MAP``)."""

    endpoints_num_filters: Channels
    filter_size_scale: Annotated[float, Field(gt=0.0, le=16.0)] = 1.0
    resample_alpha: Annotated[float, Field(gt=0.0, le=16.0)] = 0.5
    block_repeats: Annotated[int, Field(ge=1, le=64)] = 1
    expand_ratio: Annotated[float, Field(ge=1.0, le=32.0)] = 6.0
    se_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # 0 = no squeeze-excitation


class Spec(_Model):
    """A whole family: stem, body blocks, filters, resampling, fusion and variants."""

    name: str
    description: str = ""
    activation: str = "relu"
    default_variant: str | None = None
    filters: Annotated[dict[Level, Channels], Field(min_length=1)]
    stem: Stem
    resample: Resample = Resample()
    fusion: Fusion = Fusion()
    norm: Norm = Norm()
    endpoints: Endpoints = Endpoints()
    variants: Annotated[dict[str, Variant], Field(min_length=1)]
    blocks: Annotated[list[Block], Field(min_length=1, max_length=1024)]

    _source: object = PrivateAttr(default=None)
    _graph: object = PrivateAttr(default=None)

    _check = field_validator("name")(_check_name)

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        if value not in ACTIVATIONS:
            raise ValueError(f"unknown activation {value!r}; known: {', '.join(ACTIVATIONS)}")
        return value

    @model_validator(mode="after")
    def _fill_names(self) -> Spec:
        # Auto-names are positional, so they stay stable when a spec is dumped and reloaded.
        stem = [b if b.name else b.model_copy(update={"name": f"stem{i + 1}"}) for i, b in enumerate(self.stem.blocks)]
        body = [b if b.name else b.model_copy(update={"name": f"b{i + 1}"}) for i, b in enumerate(self.blocks)]
        object.__setattr__(self.stem, "blocks", stem)
        object.__setattr__(self, "blocks", body)
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
        from ._errors import PlanError

        if name is None:
            name = self.default_variant or (next(iter(self.variants)) if len(self.variants) == 1 else None)
            if name is None:
                raise PlanError(f"spec {self.name!r} has several variants; pick one of: {', '.join(self.variants)}")
        name = str(name)
        if name not in self.variants:
            raise PlanError(
                f"variants: spec {self.name!r} has no variant {name!r}; known: {', '.join(self.variants)}"
            )
        return name, self.variants[name]

    def to_dict(self) -> dict:
        """Plain data, as a spec file would hold it (names filled in)."""
        return self.model_dump(mode="json", exclude_defaults=False)

    def dumps(self, fmt: Literal["yaml", "toml", "json"] = "yaml") -> str:
        """The spec as TOML, YAML or JSON text that ``load`` reads back to an equal spec."""
        from ._loader import dumps

        return dumps(self, fmt)

    def _repr_svg_(self) -> str | None:  # Jupyter
        try:
            from ._render import render_svg
        except ImportError:
            return None
        from ._planner import plan

        # Jupyter shows the default variant, or the first one of a table without a default.
        return render_svg(plan(self, self.default_variant or next(iter(self.variants))))
