"""The ``specgraph`` command line: validate, plan, stats, render, emit, list, sample, mutate, diff, search.

Exit status (every failure is a message on stderr, never a traceback):
  0    success: everything asked for was written
  1    standard output could not be written (closed, broken pipe, disk full)
  2    bad input: a spec, an argument or an option; an -o file that exists or cannot be created
  3    this machine cannot do it: a backend is not installed or fails to import, or too little memory
  4    an internal error (a bug in specgraph; SPECGRAPH_DEBUG=1 shows the traceback)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence

from ._errors import BackendUnavailableError, ResourceError, SpecgraphError
from ._files import write_new

# The heavy modules (pydantic, networkx, jinja2) are imported inside main()'s handlers, so
# that Ctrl-C or a broken installation during the import is reported like any other failure.

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_OUTPUT", "EXIT_UNAVAILABLE",
           "main"]

EXIT_OK = 0
EXIT_OUTPUT = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class _OutputError(Exception):
    """Standard output cannot take what we write."""


def _emit_text(text: str, *, document: bool = False) -> None:
    """Write to standard output and flush, so a failure is seen here and not at exit.

    Documents (SVG, dot, Mermaid, JSON, source) are UTF-8 whatever the locale; tables use the
    terminal's encoding, with characters it lacks written as escapes."""
    stream = sys.stdout
    if stream is None:  # started with stdout closed (`>&-`)
        raise _OutputError("standard output is closed; write to a file with -o FILE or redirect it")
    try:
        buffer = getattr(stream, "buffer", None)
        if document and buffer is not None:
            stream.flush()
            buffer.write(text.encode("utf-8"))
            buffer.flush()
        else:
            stream.write(text)
            stream.flush()
    except BrokenPipeError:
        # The reader left (`| head`); point stdout at /dev/null so the interpreter's last flush is quiet.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        raise _OutputError("standard output was closed by the reader (broken pipe)") from None
    except OSError as exc:
        raise _OutputError(f"cannot write to standard output: {exc.strerror or exc}") from None


def _say(message: str) -> None:
    """One message on stderr; nothing when stderr itself is gone."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(message.rstrip("\n") + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def _planned(args: argparse.Namespace):
    from ._loader import load
    from ._planner import plan

    spec = load(args.spec)
    return plan(spec, args.variant, args.input, args.min_level, args.max_level, levels=args.levels)


def _validate(args: argparse.Namespace) -> int:
    from ._loader import load

    failed = 0
    for source in args.specs:
        try:
            spec = load(source)
        except SpecgraphError as exc:
            failed += 1
            _say(f"specgraph validate: error: {len(exc.problems)} problems:\n{exc}" if len(exc.problems) > 1
                 else f"specgraph validate: error: {exc}")
            continue
        cells = "".join(f", cell {c.name} ({len(c.blocks)} blocks x {c.repeats})" for c in spec.cells)
        kind = (f"parts {' + '.join(spec.parts)}, " if spec.parts else "") + (
            "a decoder of inputs " + ", ".join(f"{i.name} (level {i.level})" for i in spec.inputs) + ", "
            if spec.inputs else "")
        _emit_text(f"ok  {source}: {spec.name}, {kind}{len(spec.blocks)} blocks{cells}, variants "
                   f"{', '.join(spec.variants)}\n")
    if failed:
        _say(f"specgraph validate: {failed} of {len(args.specs)} file(s) failed")
    return EXIT_BAD_INPUT if failed else EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    p = _planned(args)
    if args.json:
        _emit_text(json.dumps(p.to_dict(), indent=1) + "\n", document=True)
    else:
        _emit_text(p.table() + "\n")
    return EXIT_OK


def _stats(args: argparse.Namespace) -> int:
    from ._memory import format_bytes
    from ._stats import stats

    p = _planned(args)
    s = stats(p)
    if args.json:
        data = s.to_dict()
        data.update(spec=p.spec_name, variant=p.variant, input_size=list(p.input_size), plan_hash=p.hash)
        _emit_text(json.dumps(data, indent=1) + "\n", document=True)
        return EXIT_OK
    lines = [f"{p.spec_name} {p.variant} @ {p.input_size[0]}x{p.input_size[1]}, levels {p.levels_label}",
             f"{'node':<14}{'kind':<12}{'level':>6}{'params':>14}{'MACs':>16}{'activations':>14}"]
    for row in s.nodes:
        lines.append(f"{row.name:<14}{row.kind:<12}{row.level:>6}{row.params:>14,}{row.macs:>16,}"
                     f"{format_bytes(row.activation_bytes):>14}")
    lines.append(f"params {s.params:,} (trainable {s.trainable_params:,}, non-trainable {s.non_trainable_params:,})")
    lines.append(f"MACs {s.macs:,} ({s.macs / 1e9:.3f} G)")
    lines.append(f"memory (float32): weights {format_bytes(s.param_bytes)}, activations "
                 f"{format_bytes(s.activation_bytes)} per image in a training forward pass")
    _emit_text("\n".join(lines) + "\n")
    return EXIT_OK


def _render(args: argparse.Namespace) -> int:
    from ._render import render_dot, render_mermaid, render_svg

    text = {"svg": render_svg, "dot": render_dot, "mermaid": render_mermaid}[args.format](_planned(args))
    return _output(args, text)


def _emit(args: argparse.Namespace) -> int:
    from ._codegen import emit

    return _output(args, emit(_planned(args), args.backend))


def _list(_args: argparse.Namespace) -> int:
    from ._loader import builtin_specs

    _emit_text("".join(f"{name}\n" for name in builtin_specs()))
    return EXIT_OK


def _sample(args: argparse.Namespace) -> int:
    from ._loader import load
    from ._search import sample

    samples = sample(load(args.spec), args.n, args.seed)
    if args.output_dir is None:
        if args.format == "json":
            return _output(args, json.dumps([s.to_dict() for s in samples], indent=1) + "\n")
        separator = "---\n" if args.format == "yaml" else ""
        return _output(args, separator.join(
            (f"# {s.name}\n" if args.format == "toml" else "") + s.dumps(args.format) for s in samples))
    os.makedirs(args.output_dir, exist_ok=True)
    files = [(os.path.join(args.output_dir, f"{s.name}.{args.format}"), s) for s in samples]
    taken = [path for path, _ in files if os.path.exists(path)]
    if taken and not args.force:  # checked before anything is written
        _say(f"specgraph sample: error: {taken[0]} exists ({len(taken)} of {len(files)} do); pass --force to "
             "overwrite them")
        return EXIT_BAD_INPUT
    for path, spec in files:
        try:
            write_new(path, spec.dumps(args.format), True)
        except OSError as exc:
            _say(f"specgraph sample: error: cannot write {path}: {exc.strerror or exc}")
            return EXIT_BAD_INPUT
    _emit_text("".join(f"{path}\n" for path, _ in files))
    return EXIT_OK


def _mutate(args: argparse.Namespace) -> int:
    from ._loader import load
    from ._search import mutate

    spec = load(args.spec)
    mutant, change = mutate(spec, args.seed, load(args.space) if args.space else None)
    _say(f"specgraph mutate: {change}")
    return _output(args, mutant.dumps(args.format))


def _diff(args: argparse.Namespace) -> int:
    import dataclasses

    from ._diff import diff
    from ._loader import load

    result = diff(load(args.a), load(args.b), args.variant, args.variant_b, args.input)
    if args.svg is not None:
        try:
            if not write_new(args.svg, result.svg(), args.force):
                _say(f"specgraph diff: error: {args.svg} exists; pass --force to overwrite it")
                return EXIT_BAD_INPUT
        except OSError as exc:
            _say(f"specgraph diff: error: cannot write {args.svg}: {exc.strerror or exc}")
            return EXIT_BAD_INPUT
    if args.json:
        data = {k: v for k, v in dataclasses.asdict(result).items() if k != "plans"}
        data.update(params=list(result.params), macs=list(result.macs))
        _emit_text(json.dumps(data, indent=1, default=str) + "\n", document=True)
    else:
        _emit_text(result.text())
    return EXIT_OK


def _search(args: argparse.Namespace) -> int:
    import subprocess

    from ._loader import load
    from ._planner import _parse_size
    from ._study import Budget, objective, pareto_table, search, write_front

    space = load(args.space)
    objectives = [objective(text) for text in (args.objective or ["params", "macs"])]
    folder = args.out or f"search-{space.name}"
    size = _parse_size(args.input)
    others = []
    for k in range(1, args.workers):  # more processes on the same storage: they split the trials
        command = [sys.executable, "-m", "specgraph.cli", "search", args.space, "--trials", str(args.trials),
                   "--sampler", args.sampler, "--seed", str(args.seed + k), "--input", args.input, "--out", folder,
                   "--workers", "1", "--quiet"]
        command += [part for text in (args.objective or []) for part in ("--objective", text)]
        command += ["--storage", args.storage] if args.storage else []
        command += ["--study", args.study] if args.study else []
        command += ["--max-params", str(args.max_params)] if args.max_params is not None else []
        command += ["--max-macs", str(args.max_macs)] if args.max_macs is not None else []
        others.append(subprocess.Popen(command))
    try:
        study = search(space, objectives, args.trials, storage=args.storage, study_name=args.study,
                       sampler=args.sampler, seed=args.seed, budget=Budget(args.max_params, args.max_macs),
                       input_size=size, folder=folder, progress=not args.quiet and sys.stderr is not None
                       and sys.stderr.isatty())
    finally:
        failed = [p.wait() for p in others]
    if any(failed):
        _say(f"specgraph search: error: {sum(1 for code in failed if code)} worker(s) failed")
        return EXIT_BAD_INPUT
    if args.quiet:
        return EXIT_OK
    names = [o.name for o in objectives]
    if any(t.values is not None for t in study.trials):
        written = write_front(study, folder, names, size)
        _emit_text(pareto_table(study, names) + f"wrote {len(written)} files to {folder}\n")
    else:
        _emit_text(f"no trial finished ({len(study.trials)} pruned or failed: see each trial's `pruned`)\n")
    return EXIT_OK


def _output(args: argparse.Namespace, text: str) -> int:
    """Print ``text``, or write it to ``--output`` (all or nothing; no overwrite without ``--force``)."""
    if args.output is None:
        _emit_text(text, document=True)
        return EXIT_OK
    try:
        if write_new(args.output, text, args.force):
            return EXIT_OK
        _say(f"specgraph {args.command}: error: {args.output} exists; pass --force to overwrite it")
    except OSError as exc:
        _say(f"specgraph {args.command}: error: cannot write {args.output}: {exc.strerror or exc}")
    return EXIT_BAD_INPUT


def _level(text: str) -> int:
    # ASCII digits only (int() would take "٣" or "1_0").
    if not (text.isascii() and text.isdigit() and len(text) <= 2):
        raise argparse.ArgumentTypeError(f"{text!r} is not a level (0..12)")
    return int(text)


def _levels(text: str) -> list[int]:
    return [_level(part.strip()) for part in text.split(",")]


def _add_plan_args(parser: argparse.ArgumentParser, json: bool = True) -> None:
    parser.add_argument("spec", help="spec file (.toml/.yaml/.json) or built-in name")
    parser.add_argument("--variant", "-v", help="variant name (default: the spec's default_variant)")
    parser.add_argument("--input", "-i", default="640x640", help="input size HxW (default 640x640)")
    parser.add_argument("--min-level", type=_level, help="lowest endpoint level (default: the spec's)")
    parser.add_argument("--max-level", type=_level, help="highest endpoint level (default: the spec's)")
    parser.add_argument("--levels", type=_levels, help="only these endpoint levels, e.g. 3,5 (default: all of "
                        "min..max); blocks that feed none of them are pruned")
    if json:
        parser.add_argument("--json", action="store_true", help="print JSON")


def _add_spec_output_args(parser: argparse.ArgumentParser) -> None:
    """Where and how a command that writes specs (sample, mutate) writes them."""
    parser.add_argument("--format", "-f", choices=("toml", "yaml", "json"), default="toml",
                        help="toml (default), yaml or json")
    parser.add_argument("--output", "-o", help="write to this file (default: stdout)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specgraph", description=__doc__.splitlines()[0],
                                     epilog="exit status: 0 ok, 1 output not written, 2 bad input, 3 backend "
                                     "missing or too little memory, 4 internal error, 130 interrupted")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check spec files; every problem of every file, exit 2 if any failed")
    p.add_argument("specs", nargs="+", metavar="FILE")
    p.set_defaults(run=_validate)
    p = sub.add_parser("plan", help="print the scale plan: nodes, sizes, channels, resample ops")
    _add_plan_args(p)
    p.set_defaults(run=_plan)
    p = sub.add_parser("stats", help="parameters, conv MACs and memory, per node and in total")
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
    p.set_defaults(run=_list)
    p = sub.add_parser("sample", help="draw specs from a spec's search space ([search]); each one validates and "
                       "plans")
    p.add_argument("spec", help="spec file with a [search] table, or built-in name (e.g. spinenet_space)")
    p.add_argument("-n", type=_count, default=1, help="how many (default 1)")
    p.add_argument("--seed", type=int, default=0, help="the seed: the same seed gives the same specs (default 0)")
    p.add_argument("--output-dir", "-d", help="write one file per sample here (<name>.<format>); default: stdout")
    _add_spec_output_args(p)
    p.set_defaults(run=_sample)
    p = sub.add_parser("mutate", help="a valid neighbour of a spec: one searched level, type, output or parent "
                       "changed, or two blocks swapped (the change on stderr)")
    p.add_argument("spec", help="spec file or built-in name")
    p.add_argument("--space", help="the spec whose [search] table says what may change (default: the spec's own)")
    p.add_argument("--seed", type=int, default=0, help="the seed (default 0)")
    _add_spec_output_args(p)
    p.set_defaults(run=_mutate)
    p = sub.add_parser("diff", help="what differs from one spec (or variant) to another: settings, blocks added, "
                       "removed and changed, parameters and MACs per level")
    p.add_argument("a", help="the first spec (file or built-in name)")
    p.add_argument("b", help="the second spec")
    p.add_argument("--variant", "-v", help="the variant of both (default: each spec's default)")
    p.add_argument("--variant-b", help="the second spec's variant (default: --variant)")
    p.add_argument("--input", "-i", default="640x640", help="input size HxW for the costs (default 640x640)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--svg", help="also draw the second plan, its added and changed blocks outlined, to this file")
    p.add_argument("--force", action="store_true", help="overwrite an existing SVG file")
    p.set_defaults(run=_diff)
    p = sub.add_parser("search", help="search a spec's search space with Optuna (multi-objective; resumable; "
                       "several workers share the study)")
    p.add_argument("space", help="spec file with a [search] table, or built-in name (e.g. spinenet_space)")
    p.add_argument("--objective", action="append", help="params, macs (minimised, exact, no framework) or "
                   "module:function[:minimize|maximize] (a callable (spec, plan, stats) -> float); repeat for "
                   "several (default: params and macs)")
    p.add_argument("--trials", type=_count, default=20, help="run until the study holds this many finished or "
                   "pruned trials (default 20)")
    p.add_argument("--sampler", choices=("nsga2", "tpe", "random"), default="nsga2", help="Optuna sampler "
                   "(default nsga2)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    p.add_argument("--storage", help="journal:PATH (default: <out>/study.journal), sqlite:///PATH or a database "
                   "URL such as postgresql://user@host/db")
    p.add_argument("--study", help="the study's name (default: <space>-search)")
    p.add_argument("--workers", type=_count, default=1, help="processes on this machine sharing the study "
                   "(default 1)")
    p.add_argument("--max-params", type=int, help="prune candidates with more parameters, before building them")
    p.add_argument("--max-macs", type=int, help="prune candidates with more MACs, before building them")
    p.add_argument("--input", "-i", default="256x256", help="input size HxW the candidates are planned at "
                   "(default 256x256)")
    p.add_argument("--out", "-d", help="folder for the study, the Pareto front's specs and drawings, front.svg "
                   "(default: search-<space>)")
    p.add_argument("--quiet", action="store_true", help="run the trials only: no table, no files")
    p.set_defaults(run=_search)
    return parser


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0..999999)")
    return int(text)


def _version() -> str:
    from . import __version__

    return f"specgraph {__version__}"


def _lenient_streams() -> None:
    # Characters the terminal cannot encode become escapes instead of a UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        reconfigure: Callable[..., None] | None = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(OSError, ValueError):
                reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    _lenient_streams()
    command = "specgraph"
    try:
        args = build_parser().parse_args(argv)  # exits 2 itself on a usage error
        command = f"specgraph {args.command}"
        return args.run(args)
    except KeyboardInterrupt:
        with contextlib.suppress(ValueError):  # a second Ctrl-C must not interrupt the message
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        _say(f"{command}: interrupted")
        return EXIT_INTERRUPTED
    except _OutputError as exc:
        _say(f"{command}: error: {exc}")
        return EXIT_OUTPUT
    except (BackendUnavailableError, ResourceError) as exc:
        _say(f"{command}: error: {exc}")
        return EXIT_UNAVAILABLE
    except SpecgraphError as exc:
        _say(f"{command}: error: {len(exc.problems)} problems:\n{exc}" if len(exc.problems) > 1
             else f"{command}: error: {exc}")
        return EXIT_BAD_INPUT
    except MemoryError:
        _say(f"{command}: error: out of memory")
        return EXIT_UNAVAILABLE
    except Exception as exc:  # a bug: say so in one line, with the traceback only on request
        if os.environ.get("SPECGRAPH_DEBUG"):
            raise
        _say(f"{command}: internal error: {type(exc).__name__}: {exc} (please report it; SPECGRAPH_DEBUG=1 "
             "shows the traceback)")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
