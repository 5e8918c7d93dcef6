"""Compositions: a backbone spec and decoder specs joined into one spec (one plan, one model, one drawing).

A composition file names its parts instead of holding blocks::

    name = "resnet_fpn"
    backbone = "resnet"          # a built-in spec's name, or a spec file (relative to this one)
    decoders = ["fpn"]           # each takes the previous part's endpoints, by level

    [variants.101-separable]
    use = { resnet = "101", fpn = "separable" }   # each part's variant; default: that spec's default

It loads to an ordinary ``Spec``: the parts' blocks side by side, each tagged with its part (``parts``, a
block's ``part``), each decoder input renamed to the block that feeds it, and settings that were implicit in a
part (its fusion method, its activation) written on its blocks. A backbone whose endpoints have their 1x1 convs
(SpineNet) gets them as op blocks (``<backbone>_p<level>``), so a decoder starts from the same features as the
backbone's own endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError

from ._errors import Problem, SpecgraphError, SpecValidationError
from ._schema import Name, Spec, _Model

__all__ = ["Composition", "ComposedVariant", "compose", "is_composition"]

def _ref(value: object) -> object:
    # One message for the two forms (pydantic would report each member of a union at a path of its own).
    if (isinstance(value, str) and 1 <= len(value) <= 256) or isinstance(value, Mapping):
        return value
    raise ValueError("a part is a spec: a built-in spec's name, a spec file (1 to 256 characters), or a spec's "
                     "data (a table)")


Ref = Annotated[str | dict[str, Any], BeforeValidator(_ref)]


class ComposedVariant(_Model):
    """One variant of a composition: the variant each part is built with (default: the part's default variant)."""

    use: Annotated[dict[Name, Annotated[str, Field(max_length=64)]], Field(max_length=8, default_factory=dict)]


class Composition(_Model):
    """A network made of a backbone spec and decoder specs (see the module's text)."""

    name: Name
    description: Annotated[str, Field(max_length=16_384)] = ""
    default_variant: Annotated[str, Field(max_length=64)] | None = None
    backbone: Ref
    decoders: Annotated[list[Ref], Field(min_length=1, max_length=4)]
    # A decoder's block and cell names get this prefix (``{ bifpn = "bifpn_" }``): two parts may use one name.
    prefix: Annotated[dict[Name, Annotated[str, Field(max_length=32)]], Field(max_length=8, default_factory=dict)]
    variants: Annotated[dict[Name, ComposedVariant], Field(
        min_length=1, max_length=256, default_factory=lambda: {"default": ComposedVariant()})]


def is_composition(data: Any) -> bool:
    return isinstance(data, Mapping) and ("backbone" in data or "decoders" in data)


_LOADING: list[str] = []  # the composition files being loaded, innermost last: a file may not compose itself


def compose(data: dict[str, Any], source: Any, describe: Any, limits: Any) -> tuple[dict[str, Any], Any]:
    """The plain data of the spec ``data`` (a composition read from ``source``) composes, and the source that
    locates a problem in a part's block or cell in that part; located errors."""
    try:
        comp = Composition.model_validate(data)
    except ValidationError as exc:
        raise SpecValidationError([describe(e, source, Composition) for e in exc.errors()]) from None
    base = Path(source.file).parent if source.file else Path.cwd()
    key = str(Path(source.file).resolve()) if source.file else None
    if key is not None and key in _LOADING:
        raise SpecValidationError([source.problem("backbone", "the composition includes itself (through "
                                                  f"{' -> '.join(_LOADING[_LOADING.index(key):])}); a part is "
                                                  "another spec")])
    if key is not None:
        _LOADING.append(key)
    try:
        backbone = _load_part(comp.backbone, "backbone", source, base, limits)
        decoders = [_load_part(ref, f"decoders[{i}]", source, base, limits) for i, ref in enumerate(comp.decoders)]
    finally:
        if key is not None:
            _LOADING.pop()
    composer = _Composer(comp, source, backbone, decoders)
    composed = composer.run()
    return composed, composer.located(["" if isinstance(comp.backbone, str) else "backbone."]
                                      + ["" if isinstance(ref, str) else f"decoders[{i}]."
                                         for i, ref in enumerate(comp.decoders)])


def _load_part(ref: str | dict[str, Any], where: str, source: Any, base: Path, limits: Any) -> Spec:
    """The spec ``ref`` names (a file beside the composition first, then a built-in spec), or the spec data it is:
    that data's errors are located in the composition, at ``where``."""
    from ._loader import Source, load, validate_data

    if isinstance(ref, str):
        local = base / ref
        return load(local if local.is_file() else ref, limits=limits)
    lines = {key[len(where) + 1:]: line for key, line in source.lines.items() if key.startswith(f"{where}.")}
    try:
        return validate_data(ref, Source(source.file, lines), limits=limits)
    except SpecgraphError as exc:
        located = [replace(p, path=f"{where}.{p.path}" if p.path else where) for p in exc.problems]
        raise type(exc)(located) from None


def _variant_path(name: str) -> str:
    return f"variants.{name}" if name.isidentifier() else f'variants."{name}"'


class _Composer:
    def __init__(self, comp: Composition, source: Any, backbone: Spec, decoders: list[Spec]) -> None:
        self.comp, self.source, self.backbone, self.decoders = comp, source, backbone, decoders
        self.problems: list[Problem] = []
        self.names: dict[str, str] = {}  # every node name so far -> the part it is in
        self.widths: list[tuple[str, str]] = []  # the endpoint convs' widths: (width name, the spec they come from)
        # composed "blocks[i]" / "cells[k]" -> (index of the part: 0 the backbone, its own "blocks[j]")
        self.origins: dict[str, tuple[int, str]] = {}

    def fail(self, path: str, message: str) -> None:
        self.problems.append(self.source.problem(path, message))

    def run(self) -> dict[str, Any]:
        comp, backbone = self.comp, self.backbone
        if backbone.stem is None:
            self.fail("backbone", f"{backbone.name!r} declares `inputs` (a decoder); a backbone starts with a stem")
        parts = list(backbone.parts) or [backbone.name]
        for i, decoder in enumerate(self.decoders):
            if decoder.stem is not None:
                self.fail(f"decoders[{i}]", f"{decoder.name!r} has a stem (a network); a decoder declares the feature "
                          "maps it takes as `inputs` ([[inputs]] name, level, filters)")
            elif decoder.name in parts:
                self.fail(f"decoders[{i}]", f"a part named {decoder.name!r} is already in the network; each part "
                          "once (copy the spec under another `name` to use it twice)")
            parts.append(decoder.name)
        self.raise_if_failed()
        data = backbone.to_dict()
        for name in [*self._node_names(backbone), *(c.name for c in backbone.cells)]:
            self.names[name] = backbone.name
        own_last = backbone.parts[-1] if backbone.parts else backbone.name  # where its untagged blocks are
        blocks = [dict(b, part=b["part"] or own_last) for b in data["blocks"]]
        cells = [dict(c, part=c["part"] or own_last) for c in data["cells"]]
        self._came_from(0, 0, len(blocks), 0, len(cells))
        exports = self._exports(backbone, own_last, blocks)
        resample = dict(data["resample"])
        for i, decoder in enumerate(self.decoders):
            where = f"decoders[{i}]"
            self._settings(where, decoder, resample)
            pre = self.comp.prefix.get(decoder.name, "")
            rename = {b.name: pre + b.name for b in decoder.blocks}
            rename.update({f"{c.name}/{b.name}": f"{pre}{c.name}/{b.name}" for c in decoder.cells for b in c.blocks})
            for k, given in enumerate(decoder.inputs):
                if given.level not in exports:
                    self.fail(where, f"{decoder.name!r} takes level {given.level} (its inputs[{k}], "
                              f"{given.name!r}); the part before it has endpoints at levels "
                              f"{', '.join(map(str, sorted(exports)))}")
                else:
                    rename[given.name] = exports[given.level]
            own = [self._block(where, decoder, b, rename, pre) for b in decoder.to_dict()["blocks"]]
            own_cells = [self._cell(where, decoder, c, rename, pre) for c in decoder.to_dict()["cells"]]
            for name in [b["name"] for b in own] + [c["name"] for c in own_cells]:
                if name in self.names:
                    self.fail(where, f"{decoder.name!r} has a block or cell {name!r}, a name {self.names[name]!r} "
                              f"uses too; rename one of them, or prefix {decoder.name!r}'s names: "
                              f"`prefix = {{ {decoder.name} = \"{decoder.name}_\" }}`")
                self.names[name] = decoder.name
            self.raise_if_failed()
            self._came_from(i + 1, len(blocks), len(own), len(cells), len(own_cells))
            blocks += own
            cells += own_cells
            if i + 1 < len(self.decoders):
                exports = self._exports(decoder, decoder.name, blocks)
        last = self.decoders[-1]
        data.update(
            name=comp.name, description=comp.description, default_variant=comp.default_variant,
            blocks=blocks, cells=cells, resample=resample, endpoints=last.to_dict()["endpoints"],
            variants=self._variants(parts), parts=parts)
        self.raise_if_failed()
        return data

    def raise_if_failed(self) -> None:
        if self.problems:
            raise SpecValidationError(self.problems)

    def _came_from(self, part: int, block_at: int, blocks: int, cell_at: int, cells: int) -> None:
        self.origins.update({f"blocks[{block_at + j}]": (part, f"blocks[{j}]") for j in range(blocks)})
        self.origins.update({f"cells[{cell_at + k}]": (part, f"cells[{k}]") for k in range(cells)})

    def located(self, prefixes: list[str]) -> Any:
        """The composed spec's source: its parts' blocks and cells located in the parts (``prefixes``: how each
        part's paths read here, ``decoders[0].`` for one written inline)."""
        from ._loader import PartsSource

        parts = [self.backbone, *self.decoders]
        return PartsSource(self.source.file, self.source.lines, {
            key: (parts[part]._source, prefixes[part], own) for key, (part, own) in self.origins.items()
            if parts[part]._source is not None})
    @staticmethod
    def _node_names(spec: Spec) -> list[str]:
        from ._graph import build_graph

        return list(build_graph(spec).dag)

    def _exports(self, spec: Spec, part: str, blocks: list[dict]) -> dict[int, str]:
        """The part's endpoints, level -> node: its output blocks, or (endpoints with 1x1 convs) new op blocks."""
        from ._graph import build_graph, cell_node, cell_repeats

        dag = build_graph(spec).dag
        last = spec.parts[-1] if spec.parts else None
        outputs = {dag.nodes[n]["level"]: n for n in dag if dag.nodes[n]["output"] and dag.nodes[n]["part"] == last}
        levels = range(spec.endpoints.min_level, spec.endpoints.max_level + 1)
        # A cell's block as ``<cell>/<block>``: its last repetition, however many the variant makes.
        symbolic = {cell_node(c.name, cell_repeats(spec)[c.name], b.name): f"{c.name}/{b.name}"
                    for c in spec.cells for b in c.blocks}
        exports = {lvl: symbolic.get(outputs[lvl], outputs[lvl]) for lvl in levels if lvl in outputs}
        if not spec.endpoints.conv:
            return exports
        width = f"{part}_endpoints"
        self.widths.append((width, spec.name))
        for lvl, source in list(exports.items()):
            name = f"{part}_p{lvl}"
            if name in self.names:
                self.fail("backbone", f"the endpoint conv {name!r} of {part!r} has the name of a block; rename it")
            self.names[name] = part
            blocks.append({"name": name, "level": lvl, "inputs": [source], "filters": width, "part": part,
                           "ops": [{"op": "conv", "kernel": 1}, {"op": "norm"},
                                   {"op": "act", "activation": spec.activation}]})
            exports[lvl] = name
        return exports

    def _settings(self, where: str, decoder: Spec, resample: dict) -> None:
        backbone = self.backbone
        if decoder.norm != backbone.norm:
            self.fail(where, f"{decoder.name!r}'s [norm] ({decoder.norm.momentum}, {decoder.norm.epsilon}) differs "
                      f"from {backbone.name!r}'s ({backbone.norm.momentum}, {backbone.norm.epsilon}); a network has "
                      "one norm setting: make them equal")
        groups = any(b.type is not None for b in backbone.blocks) or any(
            b.type is not None for c in backbone.cells for b in c.blocks)
        if groups and decoder.resample.up != backbone.resample.up:
            self.fail(where, f"{decoder.name!r} upsamples {decoder.resample.up!r}, {backbone.name!r}'s blocks "
                      f"{backbone.resample.up!r}; a network has one `[resample] up`: make them equal")
        resample.update(up=decoder.resample.up, pool_kernel=decoder.resample.pool_kernel)

    def _block(self, where: str, decoder: Spec, block: dict, rename: dict[str, str], pre: str,
               local: frozenset[str] = frozenset()) -> dict:
        """The decoder's ``block`` in the network: renamed (``pre``; a cell's block keeps its name, which is local,
        as are its inputs of ``local``), its inputs renamed, its implicit settings written out."""
        if block["type"] is not None:
            self.fail(where, f"{decoder.name!r}'s block {block['name']!r} is a block group (`type`); a decoder's "
                      "blocks are op blocks (`ops`)")
            return block
        ops = [dict(op, activation=op["activation"] or decoder.activation)
               if op["op"] == "act" and decoder.activation != self.backbone.activation else op for op in block["ops"]]
        filters = block["filters"]
        if filters is None and block["level"] in decoder.filters:
            filters = decoder.filters[block["level"]]
        inputs = [ref if ref in local else rename.get(ref, ref) for ref in block["inputs"]]
        name = block["name"] if local else pre + block["name"]
        return dict(block, name=name, inputs=inputs, ops=ops, filters=filters,
                    fusion=block["fusion"] or decoder.fusion.method, part=decoder.name)

    def _cell(self, where: str, decoder: Spec, cell: dict, rename: dict[str, str], pre: str) -> dict:
        local = frozenset(b["name"] for b in cell["blocks"])
        blocks = [self._block(where, decoder, b, rename, pre, local) for b in cell["blocks"]]
        return dict(cell, name=pre + cell["name"], inputs=[rename.get(ref, ref) for ref in cell["inputs"]],
                    blocks=blocks, part=decoder.name)

    def _variants(self, parts: list[str]) -> dict[str, dict]:
        backbone, decoders = self.backbone, self.decoders
        specs = {backbone.name: backbone, **{d.name: d for d in decoders}}
        merged: dict[str, dict] = {}
        for vname, composed in self.comp.variants.items():
            path = _variant_path(vname)
            chosen: dict[str, Any] = {}
            for part, spec in specs.items():
                wanted = composed.use.get(part)
                try:
                    chosen[part] = spec.variant(wanted)[1]
                except SpecgraphError as exc:
                    self.fail(f"{path}.use.{part}" if wanted is not None else f"{path}.use",
                              exc.problems[0].message + ("" if wanted is not None else
                                                         f"; name {part}'s variant in `use`"))
            for part in composed.use:
                if part not in specs:
                    self.fail(f"{path}.use.{part}", f"no part {part!r}; the parts: {', '.join(specs)}")
            if len(chosen) < len(specs):
                continue
            row = chosen[backbone.name].model_dump(mode="json")
            own = row["separable"]
            separable = (list(backbone.parts) or [backbone.name]) if own is True else list(own or [])
            separable += [d.name for d in decoders if chosen[d.name].separable is True]
            widths: dict[str, int] = dict(row["widths"] or {})
            repeats: dict[str, int] = dict(row["repeats"] or {})
            for decoder in decoders:
                for name, value in (chosen[decoder.name].widths or {}).items():
                    if widths.get(name, value) != value:
                        self.fail(path, f"the width {name!r} is {widths[name]} in {backbone.name!r} and {value} in "
                                  f"{decoder.name!r}; rename one of them")
                    widths[name] = value
                pre = self.comp.prefix.get(decoder.name, "")
                repeats.update({pre + k: v for k, v in (chosen[decoder.name].repeats or {}).items()})
            for width, spec_name in self.widths:
                widths[width] = chosen[spec_name].endpoints_num_filters
            last = decoders[-1]
            row.update(separable=separable or False, widths=widths or None, repeats=repeats or None,
                       endpoints_num_filters=chosen[last.name].endpoints_num_filters if last.endpoints.conv else None)
            merged[vname] = row
        return merged
