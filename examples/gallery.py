"""Write the spec gallery: docs/gallery.md and a drawing per built-in spec (docs/gallery/<spec>.svg).

    python examples/gallery.py            # rewrite the gallery from the specs
    python examples/gallery.py --check    # exit 1 when the committed gallery is out of date

Everything comes from the specs through specgraph itself (plan, stats, render_svg); nothing is
typed by hand, so `tests/test_gallery.py` can check that the committed pages are current.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import specgraph

ROOT = Path(__file__).resolve().parents[1]
SIZE = (640, 640)


def pages() -> dict[str, str]:
    """``{path relative to the repository: text}`` of the whole gallery."""
    out: dict[str, str] = {}
    lines = [
        "# Spec gallery",
        "",
        "Every built-in spec (`specgraph list`), drawn at its default variant, and the stats of each",
        f"variant at {SIZE[0]}x{SIZE[1]} (parameters include batch-norm moving statistics, as Keras's",
        "`count_params()`; MACs are the convolutions'). Written by `python examples/gallery.py`;",
        "`tests/test_gallery.py` checks it is current.",
        "",
    ]
    specs = {name: specgraph.load(name) for name in specgraph.builtin_specs()}
    for name, spec in specs.items():
        default = spec.default_variant or next(iter(spec.variants))
        drawing = f"docs/gallery/{name}.svg"
        out[drawing] = specgraph.render_svg(specgraph.plan(spec, default, SIZE))
        lines += [f"## `{name}`", "", spec.description, ""]
        if spec.inputs:  # a decoder: drawn on its declared inputs, and composed with backbones
            users = [other for other, s in specs.items() if name in s.parts]
            lines += ["A decoder of feature maps " + ", ".join(f"`{i.name}` (level {i.level}, {i.filters} channels)"
                                                             for i in spec.inputs)
                      + "; composed in " + ", ".join(f"[`{u}`](#{u})" for u in users) + ".", ""]
        lines += [f"![{name} {default}](gallery/{name}.svg)", "",
                  "| variant | levels | endpoint channels | parameters | trainable | MACs (G) |",
                  "|---|---|---|---|---|---|"]
        for variant in spec.variants:
            plan = specgraph.plan(spec, variant, SIZE)
            stats = specgraph.stats(plan)
            widths = sorted({n.channels for n in plan.nodes if n.kind == "endpoint"})
            lines.append(f"| {variant} | {plan.levels_label} | {', '.join(map(str, widths))} | {stats.params:,} | "
                         f"{stats.trainable_params:,} | {stats.macs / 1e9:.2f} |")
        lines.append("")
    out["docs/gallery.md"] = "\n".join(lines)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed gallery, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for relative, text in pages().items():
        path = ROOT / relative
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(relative)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python examples/gallery.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
