"""The ``specgraph`` command line: validate, plan, stats, render, emit.

Exit status: 0 on success, 2 on a spec error (message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ._errors import SpecgraphError
from ._files import write_new
from ._loader import builtin_specs, load
from ._planner import plan
from ._stats import stats

__all__ = ["main"]


def _planned(args: argparse.Namespace):
    spec = load(args.spec)
    return plan(spec, args.variant, args.input, args.min_level, args.max_level)


def _validate(args: argparse.Namespace) -> int:
    for source in args.specs:
        spec = load(source)
        blocks = len(spec.blocks)
        print(f"ok  {source}: {spec.name}, {blocks} blocks, variants {', '.join(spec.variants)}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    p = _planned(args)
    print(json.dumps(p.to_dict(), indent=1) if args.json else p.table())
    return 0


def _stats(args: argparse.Namespace) -> int:
    p = _planned(args)
    s = stats(p)
    if args.json:
        data = s.to_dict()
        data.update(spec=p.spec_name, variant=p.variant, input_size=list(p.input_size), plan_hash=p.hash)
        print(json.dumps(data, indent=1))
        return 0
    print(f"{p.spec_name} {p.variant} @ {p.input_size[0]}x{p.input_size[1]}, levels {p.min_level}..{p.max_level}")
    print(f"{'node':<14}{'kind':<12}{'level':>6}{'params':>14}{'MACs':>16}")
    for row in s.nodes:
        print(f"{row.name:<14}{row.kind:<12}{row.level:>6}{row.params:>14,}{row.macs:>16,}")
    print(f"params {s.params:,} (trainable {s.trainable_params:,}, non-trainable {s.non_trainable_params:,})")
    print(f"MACs {s.macs:,} ({s.macs / 1e9:.3f} G)")
    return 0


def _render(args: argparse.Namespace) -> int:
    from ._render import render_dot, render_mermaid, render_svg

    text = {"svg": render_svg, "dot": render_dot, "mermaid": render_mermaid}[args.format](_planned(args))
    return _output(args, text)


def _emit(args: argparse.Namespace) -> int:
    from ._codegen import emit

    return _output(args, emit(_planned(args), args.backend))


def _output(args: argparse.Namespace, text: str) -> int:
    """Print ``text``, or write it to ``--output`` (all or nothing; no overwrite without ``--force``)."""
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        if write_new(args.output, text, args.force):
            return 0
        print(f"specgraph {args.command}: error: {args.output} exists; pass --force to overwrite it", file=sys.stderr)
    except OSError as exc:
        print(f"specgraph {args.command}: error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
    return 2


def _add_plan_args(parser: argparse.ArgumentParser, json: bool = True) -> None:
    parser.add_argument("spec", help="spec file (.toml/.yaml/.json) or built-in name")
    parser.add_argument("--variant", "-v", help="variant name (default: the spec's default_variant)")
    parser.add_argument("--input", "-i", default="640x640", help="input size HxW (default 640x640)")
    parser.add_argument("--min-level", type=int, help="lowest endpoint level (default: the spec's)")
    parser.add_argument("--max-level", type=int, help="highest endpoint level (default: the spec's)")
    if json:
        parser.add_argument("--json", action="store_true", help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specgraph", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check spec files; exit 2 with every problem listed")
    p.add_argument("specs", nargs="+", metavar="FILE")
    p.set_defaults(run=_validate)
    p = sub.add_parser("plan", help="print the scale plan: nodes, sizes, channels, resample ops")
    _add_plan_args(p)
    p.set_defaults(run=_plan)
    p = sub.add_parser("stats", help="parameters and conv MACs, per node and in total")
    _add_plan_args(p)
    p.set_defaults(run=_stats)
    p = sub.add_parser("render", help="draw the plan: SVG (levels as rows, blocks in order), dot or Mermaid")
    _add_plan_args(p, json=False)
    p.add_argument("--format", "-f", choices=("svg", "dot", "mermaid"), default="svg",
                   help="svg (default), Graphviz dot or Mermaid text")
    p.add_argument("--output", "-o", help="write to this file (default: stdout)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(run=_render)
    p = sub.add_parser("emit", help="standalone model source that needs only torch (or only tensorflow)")
    _add_plan_args(p, json=False)
    p.add_argument("--backend", "-b", default="torch", help="torch (default) or tensorflow")
    p.add_argument("--output", "-o", help="write to this file (default: stdout)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(run=_emit)
    p = sub.add_parser("list", help="list the built-in specs")
    p.set_defaults(run=lambda _args: print("\n".join(builtin_specs())) or 0)
    return parser


def _version() -> str:
    from . import __version__

    return f"specgraph {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SpecgraphError as exc:
        print(f"specgraph {args.command}: error:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
