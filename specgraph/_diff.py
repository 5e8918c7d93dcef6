"""What differs between two specs (each at one variant): settings, blocks added, removed and changed, and the
parameters and MACs per level of their plans at one input size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import ArgumentError
from ._plan import Plan
from ._schema import Spec

__all__ = ["BLOCK_FIELDS", "Change", "Diff", "LevelCost", "diff"]

# A block's fields a diff compares (its name identifies it; "place" is its position among the blocks both have).
BLOCK_FIELDS = ("level", "type", "inputs", "output", "repeats", "filters", "fusion", "ops", "part")
# Top-level fields that are not settings of the network (or are compared otherwise).
_NOT_SETTINGS = {"name", "description", "default_variant", "blocks", "variants", "search"}


@dataclass(frozen=True)
class Change:
    """``block``'s ``field`` went from ``before`` to ``after`` (``block`` is "" for a setting: ``field`` is its
    dotted path, e.g. ``variant.filter_size_scale`` or ``fusion.method``)."""

    block: str
    field: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.block + ': ' if self.block else ''}{self.field} {_shown(self.before)} -> {_shown(self.after)}"


@dataclass(frozen=True)
class LevelCost:
    """Parameters and MACs of the nodes at ``level`` (the stem's included), in the first and the second plan."""

    level: int
    params: tuple[int, int]
    macs: tuple[int, int]


@dataclass(frozen=True)
class Diff:
    """``a`` and ``b`` are labels (``spinenet 49``); every tuple is in the specs' order."""

    a: str
    b: str
    input_size: tuple[int, int]
    settings: tuple[Change, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[Change, ...]
    levels: tuple[LevelCost, ...]
    plans: tuple[Plan, Plan] | None = field(default=None, compare=False, repr=False)

    @property
    def params(self) -> tuple[int, int]:
        return (sum(c.params[0] for c in self.levels), sum(c.params[1] for c in self.levels))

    @property
    def macs(self) -> tuple[int, int]:
        return (sum(c.macs[0] for c in self.levels), sum(c.macs[1] for c in self.levels))

    @property
    def same_network(self) -> bool:
        return not (self.settings or self.added or self.removed or self.changed)

    def text(self) -> str:
        h, w = self.input_size
        lines = [f"{self.a} -> {self.b} @ {h}x{w}"]
        lines += [f"  setting {c}" for c in self.settings]
        lines += [f"+ {name}" for name in self.added]
        lines += [f"- {name}" for name in self.removed]
        lines += [f"~ {c}" for c in self.changed]
        if self.same_network:
            lines.append("  the same network")
        lines.append(f"{'level':>5} {'params a':>14} {'params b':>14} {'change':>12} {'MACs a':>16} {'MACs b':>16} "
                     f"{'change':>16}")
        rows = [(str(c.level), c.params, c.macs) for c in self.levels] + [("all", self.params, self.macs)]
        for label, (pa, pb), (ma, mb) in rows:
            lines.append(f"{label:>5} {pa:>14,} {pb:>14,} {pb - pa:>+12,} {ma:>16,} {mb:>16,} {mb - ma:>+16,}")
        return "\n".join(lines) + "\n"

    def svg(self) -> str:
        """The second plan drawn with its added blocks outlined green, its changed ones orange, the removed ones
        named in the legend."""
        from ._render import render_svg

        if self.plans is None:
            raise ArgumentError("this Diff holds no plans to draw (make it with specgraph.diff)")
        marks = {name: "added" for name in self.added}
        marks.update({c.block: "changed" for c in self.changed})
        return render_svg(self.plans[1], marks, self.removed)


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def _leaves(value: Any, path: str) -> dict[str, Any]:
    """A settings table as ``{dotted path: value}``; lists are compared whole."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{path}.{key}" if path else str(key)))
        return out
    return {path: value}


def _settings(a: Spec, va: str, b: Spec, vb: str) -> list[Change]:
    da, db = a.to_dict(), b.to_dict()
    left = _leaves({k: v for k, v in da.items() if k not in _NOT_SETTINGS}, "")
    right = _leaves({k: v for k, v in db.items() if k not in _NOT_SETTINGS}, "")
    left.update(_leaves(da["variants"][va], "variant"))
    right.update(_leaves(db["variants"][vb], "variant"))
    return [Change("", key, left.get(key), right.get(key)) for key in dict.fromkeys([*left, *right])
            if left.get(key) != right.get(key)]


def _blocks(a: Spec, b: Spec) -> tuple[list[str], list[str], list[Change]]:
    da = {blk["name"]: blk for blk in a.to_dict()["blocks"]}
    db = {blk["name"]: blk for blk in b.to_dict()["blocks"]}
    added = [n for n in db if n not in da]
    removed = [n for n in da if n not in db]
    common_a = [n for n in da if n in db]
    common_b = [n for n in db if n in da]
    changed = []
    for name in common_b:
        if common_a.index(name) != common_b.index(name):
            changed.append(Change(name, "place", common_a.index(name), common_b.index(name)))
        changed += [Change(name, f, da[name].get(f), db[name].get(f)) for f in BLOCK_FIELDS
                    if da[name].get(f) != db[name].get(f)]
    return added, removed, changed


def diff(a: Spec, b: Spec, variant_a: str | None = None, variant_b: str | None = None,
         input_size: int | Sequence[int] | str = (640, 640)) -> Diff:
    """What differs from ``a`` at ``variant_a`` to ``b`` at ``variant_b`` (default: ``variant_a``, else each spec's
    default): the settings (the variants' scalars as ``variant.<field>``), the blocks ``b`` adds and removes, each
    common block's changed fields (and ``place``: its position among the common blocks), and both plans'
    parameters and MACs per level at ``input_size``."""
    from ._planner import plan
    from ._stats import stats

    for spec, argument in ((a, "a"), (b, "b")):
        ArgumentError.expect(spec, Spec, argument, "a Spec (specgraph.load)")
    va = a.variant(variant_a)[0]
    vb = b.variant(variant_b if variant_b is not None else (variant_a if variant_a in b.variants else None))[0]
    pa, pb = plan(a, va, input_size), plan(b, vb, input_size)
    costs: dict[int, list[int]] = {}
    for k, p in enumerate((pa, pb)):
        for row in stats(p).nodes:
            cost = costs.setdefault(row.level, [0, 0, 0, 0])
            cost[k] += row.params
            cost[2 + k] += row.macs
    levels = tuple(LevelCost(level, (c[0], c[1]), (c[2], c[3])) for level, c in sorted(costs.items()))
    added, removed, changed = _blocks(a, b)
    return Diff(f"{a.name} {va}", f"{b.name} {vb}", pa.input_size, tuple(_settings(a, va, b, vb)), tuple(added),
                tuple(removed), tuple(changed), levels, (pa, pb))
