"""Search spaces declared in a spec (``[search]``): checking them, drawing samples and mutating specs.

A space varies the spec's body blocks (levels, types, parents, outputs, their order within a group) and
the searched variant's scalars. Every draw is plain spec data; the loader's validator and the planner
accept or refuse it, so a sample or a mutation is only ever a spec that plans. Randomness is a
``random.Random`` seeded from the seed and the sample's index, so a seed gives byte-identical specs, and
the first samples of a longer run are the samples of a shorter one.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._errors import ArgumentError, Problem, SearchError, SpecgraphError
from ._schema import MAX_LEVEL, BlockChoices, LevelOffset, ParentChoice, Permutation, Search, Spec

__all__ = ["ALL_BLOCKS", "Chooser", "Mutation", "RandomChooser", "base_data", "check_space", "decisions",
           "default_space", "draw", "mutate", "sample"]

ALL_BLOCKS = "*"  # in ``search.blocks[i].blocks``: every body block
CHECK_SIZE = (256, 256)  # the size draws are planned at (a plan's validity does not depend on it)
_FIELDS = ("level", "type", "inputs", "output")


def check_space(spec: Spec) -> list[Problem]:
    """The problems of ``spec.search`` that its schema cannot see: unknown or repeated block names, a field set
    twice for one block, a type for an op block, a variant the spec lacks. Paths are ``search....``."""
    space = spec.search
    if space is None:
        return []
    problems: list[Problem] = []
    names = [b.name for b in spec.blocks]
    ops = {b.name for b in spec.blocks if b.ops is not None}
    if space.variant is not None and space.variant not in spec.variants:
        problems.append(Problem(f"no variant {space.variant!r}; the spec's: {', '.join(spec.variants)}",
                                "search.variant"))
    set_by: dict[tuple[str, str], str] = {}
    for i, rule in enumerate(space.blocks):
        for j, name in enumerate(rule.blocks):
            if name != ALL_BLOCKS and name not in names:
                problems.append(Problem(_unknown(name, names), f"search.blocks[{i}].blocks[{j}]"))
        for name in _selected(rule, names):
            for field in _FIELDS:
                if getattr(rule, field) is None:
                    continue
                if (name, field) in set_by:
                    problems.append(Problem(f"{name}'s {field} is searched by {set_by[name, field]} already; "
                                            "say it once", f"search.blocks[{i}].{field}"))
                set_by[name, field] = f"search.blocks[{i}]"
            if rule.type is not None and name in ops:
                problems.append(Problem(f"{name} is an op block (`ops`); only a block group has a `type`",
                                        f"search.blocks[{i}].type"))
    permuted: dict[str, str] = {}
    for i, group in enumerate(space.permute):
        for j, name in enumerate(group.blocks):
            where = f"search.permute[{i}].blocks[{j}]"
            if name not in names:
                problems.append(Problem(_unknown(name, names), where))
            elif name in permuted:
                problems.append(Problem(f"{name} is in {permuted[name]} already; a block moves within one group",
                                        where))
            else:
                permuted[name] = f"search.permute[{i}]"
    return problems


def _unknown(name: str, names: list[str]) -> str:
    shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
    return f"no body block {name!r} (the spec's: {shown or 'none'}; {ALL_BLOCKS!r} is every one)"


def _selected(rule: BlockChoices, names: list[str]) -> list[str]:
    return list(names) if ALL_BLOCKS in rule.blocks else [n for n in rule.blocks if n in names]


class _Reject(Exception):
    """A draw that cannot be a spec (e.g. fewer eligible parents than ``k``); drawn again."""


@dataclass(frozen=True)
class Mutation:
    """One change :func:`mutate` made: ``kind`` (level, type, parent, output, swap), the block(s), before, after."""

    kind: str
    block: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.block}: {self.kind} {self.before} -> {self.after}"


def default_space(spec: Spec) -> Search:
    """What :func:`mutate` may change in a spec without a ``[search]`` table: each block group's level by one
    either way, its type (residual or bottleneck, as the spec's are; mbconv stays), one of its parents (any
    earlier node), and the places of two blocks among the non-output block groups or among the output ones."""
    groups = [b for b in spec.blocks if b.type is not None]
    types = sorted({b.type for b in groups} | ({"residual", "bottleneck"} if any(
        b.type in ("residual", "bottleneck") for b in groups) else set()))
    rules = [BlockChoices(blocks=[b.name for b in groups], level=LevelOffset(offset=(-1, 1)),
                          inputs=ParentChoice(k=2))] if groups else []
    plain = [b.name for b in groups if b.type in ("residual", "bottleneck")]
    if plain and len(types) > 1:
        rules.append(BlockChoices(blocks=plain, type=[t for t in types if t != "mbconv"]))
    permute = [Permutation(blocks=names) for names in ([b.name for b in groups if not b.output],
                                                       [b.name for b in groups if b.output]) if len(names) > 1]
    return Search(blocks=rules, permute=permute)


def _space_of(spec: Spec, space: Search | Spec | None) -> Search:
    if isinstance(space, Spec):
        if space.search is None:
            raise ArgumentError(Problem(f"spec {space.name!r} declares no search space (a [search] table)", "space"))
        space = space.search
    return space or spec.search or default_space(spec)


def _check(data: dict[str, Any], variant: str) -> Spec:
    """The draw as a spec, if the validator and the planner take it; else the SpecgraphError they raise."""
    from ._loader import validate_data
    from ._planner import plan

    spec = validate_data(data)
    plan(spec, variant, CHECK_SIZE)
    return spec


def _draws(spec: Spec, space: Search, draw: Callable[[], tuple[dict[str, Any], Any]], what: str
           ) -> tuple[Spec, Any]:
    """The first of up to ``space.tries`` draws that plans."""
    variant = space.variant or spec.variant()[0]
    last = "none drawn"
    for _ in range(space.tries):
        try:
            data, info = draw()
            return _check(data, variant), info
        except _Reject as exc:
            last = str(exc)
        except SpecgraphError as exc:
            last = str(exc.problems[0]) if exc.problems else str(exc)
    raise SearchError(Problem(f"{what}: no valid spec in {space.tries} draws (search.tries); the last was refused "
                              f"with: {last}", "search"))


def base_data(spec: Spec, space: Search, name: str, description: str) -> dict[str, Any]:
    """The spec's data as one variant, without its search space, under a new name."""
    data = copy.deepcopy(spec.to_dict())
    data.pop("search", None)
    variant = space.variant or spec.variant()[0]
    data["variants"] = {variant: data["variants"][variant]}
    data.update(name=name, default_variant=variant, description=description)
    return data


def _eligible(order: list[str], stem: list[str], position: int, window: int | None) -> list[str]:
    """The nodes a block at ``position`` of the body may take as parents: the stem blocks, then the body blocks
    before it; the last ``window`` of them if given."""
    earlier = stem + order[:position]
    return earlier[-window:] if window is not None else earlier


class Chooser:
    """Makes a draw's decisions, each under a stable name (``i3.level``, ``permute[0]``): at random for
    :func:`sample`, by an optimiser's trial for a search (:mod:`specgraph._study`)."""

    def choice(self, name: str, options: list[Any]) -> Any:
        raise NotImplementedError

    def permutation(self, name: str, items: list[str]) -> list[str]:
        raise NotImplementedError

    def subset(self, name: str, eligible: list[str], k: int) -> list[str]:
        """``k`` distinct items of ``eligible``."""
        raise NotImplementedError


class RandomChooser(Chooser):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, name: str, options: list[Any]) -> Any:
        return self.rng.choice(options)

    def permutation(self, name: str, items: list[str]) -> list[str]:
        items = list(items)
        self.rng.shuffle(items)
        return items

    def subset(self, name: str, eligible: list[str], k: int) -> list[str]:
        return self.rng.sample(eligible, k)


def _levels(choice: list[int] | LevelOffset, base: int) -> list[int]:
    if isinstance(choice, LevelOffset):
        return [base + k for k in range(choice.offset[0], choice.offset[1] + 1) if 0 <= base + k <= MAX_LEVEL]
    return list(choice)


def decisions(spec: Spec, space: Search) -> dict[str, list[Any]]:
    """Every categorical decision a draw makes, by name, with its options (the permutations and parents, whose
    options depend on the draw, are left out): what an optimiser's parameters are named after."""
    names = [b.name for b in spec.blocks]
    base = {b.name: b for b in spec.blocks}
    out: dict[str, list[Any]] = {}
    for rule in space.blocks:
        for name in _selected(rule, names):
            if rule.level is not None:
                out[f"{name}.level"] = _levels(rule.level, base[name].level)
            if rule.type is not None:
                out[f"{name}.type"] = list(rule.type)
            if rule.output is not None:
                out[f"{name}.output"] = list(rule.output)
    out.update({f"variant.{field}": list(values)
                for field, values in space.scalars.model_dump(exclude_none=True).items()})
    return out


def draw(spec: Spec, space: Search, chooser: Chooser, data: dict[str, Any]) -> dict[str, Any]:
    """One draw from ``space`` as spec data (``data``: the spec's, as :func:`base_data` makes it), decided by
    ``chooser``. It may be refused by the validator or the planner; :class:`_Reject` when it cannot be spec data."""
    data = copy.deepcopy(data)
    blocks = data["blocks"]
    at = {b["name"]: k for k, b in enumerate(blocks)}
    for i, group in enumerate(space.permute):
        positions = sorted(at[n] for n in group.blocks)
        moved = chooser.permutation(f"permute[{i}]", [blocks[k]["name"] for k in positions])
        originals = {blocks[k]["name"]: blocks[k] for k in positions}
        for k, name in zip(positions, moved, strict=True):
            blocks[k] = originals[name]
    order = [b["name"] for b in blocks]
    by_name = {b["name"]: b for b in blocks}
    base = {b.name: b for b in spec.blocks}
    stem = [b.name for b in spec.stem.blocks] if spec.stem is not None else [i.name for i in spec.inputs]
    names = [b.name for b in spec.blocks]
    for rule in space.blocks:
        chosen = set(_selected(rule, names))
        for position, name in enumerate(order):  # in the drawn order, each once per rule
            if name not in chosen:
                continue
            block = by_name[name]
            if rule.level is not None:
                block["level"] = chooser.choice(f"{name}.level", _levels(rule.level, base[name].level))
            if rule.type is not None:
                block["type"] = chooser.choice(f"{name}.type", list(rule.type))
            if rule.output is not None:
                block["output"] = chooser.choice(f"{name}.output", list(rule.output))
            if rule.inputs is not None:
                eligible = _eligible(order, stem, position, rule.inputs.window)
                if len(eligible) < rule.inputs.k:
                    raise _Reject(f"{name} has {len(eligible)} eligible parent(s), fewer than k = {rule.inputs.k}")
                picked = set(chooser.subset(f"{name}.inputs", eligible, rule.inputs.k))
                block["inputs"] = [n for n in eligible if n in picked]  # in build order: one network, one text
    variant = data["variants"][data["default_variant"]]
    for field, values in space.scalars.model_dump(exclude_none=True).items():
        variant[field] = chooser.choice(f"variant.{field}", list(values))
    return data


def sample(spec: Spec, n: int = 1, seed: int = 0) -> list[Spec]:
    """``n`` specs drawn from ``spec``'s search space, each one that validates and plans.

    Sample ``i`` of seed ``s`` is named ``<spec>-s<s>-<i>`` and drawn from its own generator, so it is the
    same in any run that draws it. Raises :class:`SearchError` when a sample takes more than ``search.tries``
    draws."""
    ArgumentError.expect(spec, Spec, "spec", "a Spec with a [search] table (specgraph.load)")
    ArgumentError.expect(n, int, "n", "the number of samples (int)")
    ArgumentError.expect(seed, int, "seed", "an integer seed")
    if n < 0:
        raise ArgumentError(Problem(f"expected 0 or more samples, got {n}", "n"))
    if spec.search is None:
        raise ArgumentError(Problem(f"spec {spec.name!r} declares no search space (a [search] table) to sample",
                                    "spec"))
    space = spec.search
    samples = []
    for i in range(n):
        rng = random.Random(f"specgraph.sample:{seed}:{i}")
        name = f"{spec.name}-s{seed}-{i}"
        data = base_data(spec, space, name, f"sample {i} (seed {seed}) of the search space of {spec.name}")
        chooser = RandomChooser(rng)
        drawn, _ = _draws(spec, space, lambda data=data, chooser=chooser: (draw(spec, space, chooser, data), None),
                          f"sample {i} (seed {seed})")
        samples.append(drawn)
    return samples


def _moves(spec: Spec, space: Search) -> list[tuple[str, str, Any]]:
    """Every (kind, block, rule) a mutation may change: a searched level, type, output or parent of a block, or a
    swap within a permutation group (block = the group's index)."""
    names = [b.name for b in spec.blocks]
    moves: list[tuple[str, str, Any]] = []
    for rule in space.blocks:
        for name in _selected(rule, names):
            moves += [(field, name, rule) for field in _FIELDS if getattr(rule, field) is not None]
    moves += [("swap", str(i), group) for i, group in enumerate(space.permute)]
    return moves


def _draw_mutation(spec: Spec, space: Search, rng: random.Random, data: dict[str, Any],
                   moves: list[tuple[str, str, Any]]) -> tuple[dict[str, Any], Mutation]:
    data = copy.deepcopy(data)
    blocks = data["blocks"]
    at = {b["name"]: k for k, b in enumerate(blocks)}
    kind, name, rule = rng.choice(moves)
    if kind == "swap":
        a, b = rng.sample(list(rule.blocks), 2)
        blocks[at[a]], blocks[at[b]] = blocks[at[b]], blocks[at[a]]
        return data, Mutation("swap", f"{a}, {b}", [a, b], [b, a])
    block = blocks[at[name]]
    if kind == "level":
        # An offset is taken from the block's level as it is now: a mutation is a step from here.
        levels = rule.level if not isinstance(rule.level, LevelOffset) else \
            [block["level"] + k for k in range(rule.level.offset[0], rule.level.offset[1] + 1)]
        options = [lvl for lvl in levels if lvl != block["level"] and 0 <= lvl <= MAX_LEVEL]
    elif kind == "type":
        options = [t for t in rule.type if t != block["type"]]
    elif kind == "output":
        options = [o for o in rule.output if o != block["output"]]
    else:  # a parent: one replaced by another eligible node
        stem = [b.name for b in spec.stem.blocks] if spec.stem is not None else [i.name for i in spec.inputs]
        eligible = _eligible([b["name"] for b in blocks], stem, at[name], rule.inputs.window)
        spare = [n for n in eligible if n not in block["inputs"]]
        if not spare:
            raise _Reject(f"{name} has no other eligible parent")
        old = rng.choice(block["inputs"])
        new = rng.choice(spare)
        inputs = [new if p == old else p for p in block["inputs"]]
        before = list(block["inputs"])
        block["inputs"] = [n for n in eligible if n in inputs] if set(inputs) <= set(eligible) else inputs
        return data, Mutation("parent", name, before, list(block["inputs"]))
    if not options:
        raise _Reject(f"{name}'s {kind} has no other candidate")
    before, block[kind] = block[kind], rng.choice(options)
    return data, Mutation(kind, name, before, block[kind])


def mutate(spec: Spec, seed: int = 0, space: Search | Spec | None = None) -> tuple[Spec, Mutation]:
    """A valid neighbour of ``spec``: one searched level, type, output or parent changed, or two blocks of a
    permutation group swapped; and the :class:`Mutation` made. ``space``: the search space whose moves are
    allowed (a ``Search`` or a spec holding one); default: ``spec``'s own ``[search]`` table, else
    :func:`default_space`. The neighbour keeps ``spec``'s search space, so it can be mutated again."""
    ArgumentError.expect(spec, Spec, "spec", "a Spec (specgraph.load)")
    ArgumentError.expect(seed, int, "seed", "an integer seed")
    chosen = _space_of(spec, space)
    moves = _moves(spec, chosen)
    if not moves:
        raise SearchError(Problem("the search space varies nothing (no searched field, no permutation)", "search"))
    rng = random.Random(f"specgraph.mutate:{seed}")
    data = copy.deepcopy(spec.to_dict())
    data["description"] = f"a mutation (seed {seed}) of {spec.name}"
    mutant, change = _draws(spec, chosen, lambda: _draw_mutation(spec, chosen, rng, data, moves),
                            f"mutation (seed {seed})")
    return mutant, change
