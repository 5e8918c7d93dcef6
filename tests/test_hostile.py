"""The hostile-input corpus: malformed and malicious files, command lines and API calls.

Every case asserts what the user sees: the exit status or the ``SpecgraphError`` subclass, a
message that names the place (``file:line: path``) or the argument, no traceback, under 5 s
and 500 MB, and no file left behind. Files and their expectations are in tests/hostile/
(cases.toml); command lines and API calls are the tables below; cases that need a real
process (closed or broken stdout, a full disk, an ASCII terminal, Ctrl-C) run one.
"""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomllib

import specgraph
from specgraph import cli

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "hostile"
CASES = tomllib.loads((CORPUS / "cases.toml").read_text(encoding="utf-8"))["case"]
SECONDS, MEGABYTES = 5.0, 500
SMALL = str(HERE / "data" / "small.toml")


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float
    peak_mb: float


@contextmanager
def _measured() -> Iterator[dict[str, float]]:
    """Wall time and the peak of Python allocations (tracemalloc) of the block."""
    result: dict[str, float] = {}
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - start
        result["peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()


def run_cli(args: list[str]) -> Run:
    """``specgraph ARGS`` in this process, with stdout and stderr captured as a terminal would get them."""
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        with _measured() as m:
            try:
                code = cli.main(args)
            except SystemExit as exc:  # argparse's usage errors
                code = int(exc.code or 0)
    finally:
        sys.stdout, sys.stderr = saved
    texts = []
    for stream in (out, err):
        stream.flush()
        texts.append(stream.buffer.getvalue().decode("utf-8"))  # type: ignore[attr-defined]
    return Run(code, texts[0], texts[1], m["seconds"], m["peak_mb"])


def assert_clean(run: Run) -> None:
    assert "Traceback" not in run.err and "Traceback" not in run.out, run.err
    assert run.seconds < SECONDS, f"{run.seconds:.1f} s"
    assert run.peak_mb < MEGABYTES, f"{run.peak_mb:.0f} MB"


@pytest.fixture(autouse=True, scope="module")
def _warm() -> None:
    """Import and build once before anything is timed: the limits are for the case, not for imports."""
    plan = specgraph.plan(SMALL, "tiny", 64)
    specgraph.render_svg(plan), specgraph.render_dot(plan), specgraph.render_mermaid(plan)
    specgraph.stats(plan)


# ---------------------------------------------------------------- the file corpus


def test_the_corpus_is_large_and_every_file_has_a_case() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.name != "cases.toml"}
    assert files == {c["file"] for c in CASES}
    assert len(CASES) + len(CLI_CASES) + len(API_CASES) + len(PROCESS_CASES) >= 100


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_file(case: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything written would land here
    path = str(CORPUS / case["file"])
    run = run_cli(case.get("args", ["validate", path]))
    assert_clean(run)
    assert run.code == case["exit"], run.err
    if case["exit"] == 0:
        assert run.out.startswith(f"ok  {path}")
    else:
        assert case.get("message", "") in run.err, run.err
        where = f"{path}:{case['line']}: " if "line" in case else f"{path}"
        assert where in run.err, run.err
        if "path" in case:
            assert f": {case['path']}: " in run.err, run.err
    assert not list(tmp_path.iterdir())

    # The same file through the API: the documented class, a Problem that points at the place.
    if "error" not in case:
        specgraph.load(path)
        return
    with pytest.raises(specgraph.SpecgraphError) as info:
        specgraph.load(path)
    assert type(info.value).__name__ == case["error"]
    problem = info.value.problems[0]
    assert problem.file == path
    if "line" in case:
        assert any(p.line == case["line"] for p in info.value.problems), str(info.value)
    if "path" in case:
        assert any(p.path == case["path"] for p in info.value.problems), str(info.value)


# ---------------------------------------------------------------- command lines

# (id, args, exit status, fragment of stderr)
CLI_CASES: list[tuple[str, list[str], int, str]] = [
    ("input-underscore", ["plan", SMALL, "--input", "6_40"], 2, "input_size '6_40': write it as HxW"),
    ("input-arabic-digits", ["plan", SMALL, "--input", "\u0666\u0664\u0660x640"], 2, "write it as HxW"),
    ("input-zero", ["plan", SMALL, "--input", "0x640"], 2, "between 1 and 65536"),
    ("input-huge", ["plan", SMALL, "--input", "99999999x1"], 2, "write it as HxW"),
    ("input-three-parts", ["plan", SMALL, "--input", "64x64x3"], 2, "write it as HxW"),
    ("input-negative", ["plan", SMALL, "--input=-64x64"], 2, "write it as HxW"),
    ("min-level-arabic", ["plan", SMALL, "--min-level", "\u0663"], 2, "is not a level"),
    ("min-level-underscore", ["plan", SMALL, "--min-level", "1_0"], 2, "is not a level"),
    ("levels-reversed", ["plan", SMALL, "--min-level", "5", "--max-level", "3"], 2, "min_level <= max_level"),
    ("level-without-output", ["plan", SMALL, "--max-level", "7"], 2, "no output block at level 6, 7"),
    ("unknown-variant", ["stats", SMALL, "--variant", "nope"], 2, "no variant 'nope'; known: tiny"),
    ("hostile-variant", ["stats", SMALL, "--variant", "\n}\ndigraph x {"], 2, "no variant '\\n}\\ndigraph x {'"),
    ("unknown-builtin", ["plan", "spinenet9000"], 2, "no built-in spec of that name"),
    ("path-too-long", ["validate", "x" * 5000 + ".yaml"], 2, "no spec file"),
    ("directory", ["validate", str(HERE)], 2, "no spec file"),
    ("unknown-backend", ["emit", SMALL, "--backend", "nope"], 3, "backend 'nope' is not installed"),
    ("unknown-format", ["render", SMALL, "--format", "png"], 2, "invalid choice: 'png'"),
    ("unknown-command", ["frobnicate"], 2, "invalid choice"),
    ("no-arguments", [], 2, "required: command"),
    ("validate-checks-every-file", ["validate", str(CORPUS / "dup-key.yaml"), SMALL, str(CORPUS / "cycle.yaml")], 2,
     "2 of 3 file(s) failed"),
]


@pytest.mark.parametrize(("case", "args", "code", "fragment"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_command_line(case: str, args: list[str], code: int, fragment: str, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = run_cli(args)
    assert_clean(run)
    assert run.code == code, run.err
    assert fragment in run.err, run.err
    assert not list(tmp_path.iterdir())


def test_validate_reports_every_bad_file_and_passes_the_good_one() -> None:
    run = run_cli(["validate", str(CORPUS / "dup-key.yaml"), SMALL, str(CORPUS / "cycle.yaml")])
    assert run.code == 2
    assert run.out == f"ok  {SMALL}: small, 6 blocks, variants tiny\n"
    assert "dup-key.yaml:3: name: duplicate key" in run.err and "cycle.yaml:14: blocks[1].inputs" in run.err


def test_output_file_that_exists_is_kept_and_a_failed_render_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "plan.svg"
    target.write_text("mine")
    run = run_cli(["render", SMALL, "-o", str(target)])
    assert run.code == 2 and "exists; pass --force" in run.err and target.read_text() == "mine"
    run = run_cli(["render", str(CORPUS / "cycle.yaml"), "-o", str(tmp_path / "new.svg")])
    assert run.code == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["plan.svg"]
    run = run_cli(["render", SMALL, "-o", str(tmp_path / "missing" / "plan.svg")])
    assert run.code == 2 and "cannot write" in run.err and sorted(p.name for p in tmp_path.iterdir()) == ["plan.svg"]


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    import specgraph._planner

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(specgraph._planner, "plan", interrupted)
    run = run_cli(["plan", SMALL])
    assert run.code == 130 and run.err == "specgraph plan: interrupted\n"


def test_backend_failing_to_import_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import specgraph._backends

    class Broken(EntryPoint):
        def load(self) -> Any:
            raise MemoryError  # what the probe saw while importing a backend

    broken = Broken("torch", "specgraph_torch", specgraph._backends.ENTRY_POINT_GROUP)
    monkeypatch.setattr(specgraph._backends, "available_backends", lambda: {"torch": broken})
    run = run_cli(["emit", SMALL])
    assert_clean(run)
    assert run.code == 3 and "backend 'torch' failed to import: MemoryError" in run.err


def test_internal_error_is_one_line_exit_4(monkeypatch: pytest.MonkeyPatch) -> None:
    import specgraph._planner

    def bug(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(specgraph._planner, "plan", bug)
    run = run_cli(["plan", SMALL])
    assert run.code == 4
    assert run.err.count("\n") == 1 and "internal error: ZeroDivisionError: a bug" in run.err


# ---------------------------------------------------------------- API calls


def _spec() -> specgraph.Spec:
    return specgraph.load(SMALL)


def _plan() -> specgraph.Plan:
    return specgraph.plan(_spec(), "tiny", 64)


def _nested(depth: int) -> dict:
    data: dict = {}
    inner = data
    for _ in range(depth):
        inner["x"] = {}
        inner = inner["x"]
    return data


def _huge_plan() -> specgraph.Plan:
    data = specgraph.load(SMALL).to_dict()
    data["filters"] = {k: 16384 for k in data["filters"]}
    data["stem"]["conv"]["filters"] = 16384
    data["variants"]["tiny"].update(block_repeats=64, endpoints_num_filters=16384)
    return specgraph.plan(specgraph.load(data), "tiny", 4096)


def _from_dict_renamed() -> specgraph.Plan:
    data = _plan().to_dict()
    data["nodes"] = "not nodes"
    return specgraph.Plan.from_dict(data)


A, S, V = specgraph.ArgumentError, specgraph.SpecSyntaxError, specgraph.SpecValidationError
P, B, U = specgraph.PlanError, specgraph.BackendError, specgraph.BackendUnavailableError

# (id, call, error class, fragment of the message; it names the argument or the place)
API_CASES: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("load-none", lambda: specgraph.load(None), A, "load(source)"),  # type: ignore[arg-type]
    ("load-int", lambda: specgraph.load(123), A, "load(source)"),  # type: ignore[arg-type]
    ("load-bytes", lambda: specgraph.load(b"name: x\n"), A, "got bytes"),  # type: ignore[arg-type]
    ("load-list", lambda: specgraph.load(["name"]), A, "got list"),  # type: ignore[arg-type]
    ("load-long-path", lambda: specgraph.load("x" * 5000), S, "no spec file"),
    ("load-nul-path", lambda: specgraph.load("spec\x00.yaml"), S, "no spec file 'spec\\x00.yaml'"),
    ("load-text-surrogate", lambda: specgraph.load("name: \ud800\nx: 1\n"), S, "invalid YAML"),
    ("load-text-too-large", lambda: specgraph.load("a: b\n" * 1_000_000), S, "the limit is"),
    ("load-deep-dict", lambda: specgraph.load(_nested(5000)), S, "nested more than 32 levels deep"),
    ("load-huge-int", lambda: specgraph.load({**_spec().to_dict(), "filters": {2: 10**5000}}), V,
     "filters[2]: Input should be less than or equal to 16384 (got an integer of about 5,001 digits)"),
    ("load-bool-level", lambda: specgraph.load({**_spec().to_dict(), "filters": {True: 16}}), V, "filters"),
    ("load-name-newline", lambda: specgraph.load({**_spec().to_dict(), "name": "small\n"}), V,
     "name: a name holds no control"),
    ("load-variant-newline", lambda: specgraph.load({**_spec().to_dict(), "variants": {"a\nb": {
        "endpoints_num_filters": 8}}}), V, 'variants."a\\nb": the key: a name holds'),
    ("plan-none", lambda: specgraph.plan(None), A, "plan(spec)"),  # type: ignore[arg-type]
    ("plan-input-none", lambda: specgraph.plan(_spec(), "tiny", None), A, "input_size"),  # type: ignore[arg-type]
    ("plan-input-float", lambda: specgraph.plan(_spec(), "tiny", 64.5), A, "input_size"),  # type: ignore[arg-type]
    ("plan-input-underscore", lambda: specgraph.plan(_spec(), "tiny", "6_4"), P, "input_size '6_4'"),
    ("plan-input-bools", lambda: specgraph.plan(_spec(), "tiny", (True, 64)), P, "input_size"),
    ("plan-variant-list", lambda: specgraph.plan(_spec(), ["tiny"]), A, "variant"),  # type: ignore[arg-type]
    ("plan-variant-unknown", lambda: specgraph.plan(_spec(), "huge"), P, "no variant 'huge'"),
    ("plan-min-level-bool", lambda: specgraph.plan(_spec(), "tiny", 64, min_level=True), A, "min_level"),
    ("plan-max-level-str", lambda: specgraph.plan(_spec(), "tiny", 64, max_level="5"), A,  # type: ignore[arg-type]
     "max_level"),
    ("plan-channels-float", lambda: specgraph.plan(_spec(), "tiny", 64, input_channels=3.5), A,  # type: ignore
     "input_channels"),
    ("plan-channels-zero", lambda: specgraph.plan(_spec(), "tiny", 64, input_channels=0), P, "input_channels 0"),
    ("stats-none", lambda: specgraph.stats(None), A, "stats(plan)"),  # type: ignore[arg-type]
    ("stats-spec", lambda: specgraph.stats(_spec()), A, "stats(plan)"),  # type: ignore[arg-type]
    ("render-svg-none", lambda: specgraph.render_svg(None), A, "render_svg(plan)"),  # type: ignore[arg-type]
    ("render-dot-none", lambda: specgraph.render_dot(None), A, "render_dot(plan)"),  # type: ignore[arg-type]
    ("render-mermaid-str", lambda: specgraph.render_mermaid("spinenet"), A,  # type: ignore[arg-type]
     "render_mermaid(plan)"),
    ("build-graph-none", lambda: specgraph.build_graph(None), A, "build_graph(spec)"),  # type: ignore[arg-type]
    ("compile-none", lambda: specgraph.compile(None, "null"), A, "compile(plan_or_spec)"),  # type: ignore
    ("compile-backend-none", lambda: specgraph.compile(_plan(), None), A, "backend"),  # type: ignore[arg-type]
    ("compile-backend-unknown", lambda: specgraph.compile(_plan(), "nope"), U, "backend 'nope' is not installed"),
    ("compile-drop-rate-str", lambda: specgraph.compile(_plan(), "null", stochastic_depth_drop_rate="x"), A,
     "stochastic_depth_drop_rate: Input should be a valid number (got 'x')"),
    ("compile-drop-rate-1", lambda: specgraph.compile(_plan(), "null", stochastic_depth_drop_rate=1.0), A,
     "stochastic_depth_drop_rate: Input should be less than 1"),
    ("compile-momentum-nan", lambda: specgraph.compile(_plan(), "null", norm_momentum=math.nan), A,
     "norm_momentum: Input should be less than 1 (got nan)"),
    ("compile-momentum-5", lambda: specgraph.compile(_plan(), "null", norm_momentum=5.0), A,
     "norm_momentum: Input should be less than 1 (got 5.0)"),
    ("compile-epsilon-negative", lambda: specgraph.compile(_plan(), "null", norm_epsilon=-1), A,
     "norm_epsilon: Input should be greater than 0"),
    ("compile-sync-bn-str", lambda: specgraph.compile(_plan(), "null", use_sync_bn="yes"), A, "use_sync_bn"),
    ("compile-check-memory-int", lambda: specgraph.compile(_plan(), "null", check_memory=0), A, "check_memory"),
    ("compile-too-large", lambda: specgraph.compile(_huge_plan(), "null"), specgraph.ResourceError,
     "pass check_memory=False"),
    ("get-backend-int", lambda: specgraph.get_backend(3), A, "backend"),  # type: ignore[arg-type]
    ("emit-unknown-backend", lambda: __import__("specgraph._codegen").
     _codegen.emit(_plan(), "nope"), U, "backend 'nope' is not installed"),
    ("plan-from-dict-none", lambda: specgraph.Plan.from_dict(None), P, "not a plan dict"),  # type: ignore[arg-type]
    ("plan-from-dict-garbage", _from_dict_renamed, P, "not a plan dict"),
    ("dumps-unknown-format", lambda: _spec().dumps("xml"), A, "fmt: unknown format 'xml'"),  # type: ignore
    ("variant-unknown", lambda: _spec().variant("x\n"), P, "no variant 'x\\n'"),
    ("modelgarden-tuples-none", lambda: specgraph.from_modelgarden_tuples(None), A,  # type: ignore[arg-type]
     "block_specs"),
]


@pytest.mark.parametrize(("case", "call", "error", "fragment"), API_CASES, ids=[c[0] for c in API_CASES])
def test_api(case: str, call: Callable[[], Any], error: type[Exception], fragment: str, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with _measured() as m, pytest.raises(error) as info:
        call()
    assert type(info.value) is error  # the documented class itself, not a framework error below it
    assert isinstance(info.value, specgraph.SpecgraphError)
    assert fragment in str(info.value), str(info.value)
    problem = info.value.problems[0]
    assert isinstance(problem, specgraph.Problem) and problem.message
    assert m["seconds"] < SECONDS and m["peak_mb"] < MEGABYTES, m
    assert not list(tmp_path.iterdir())


def test_argument_errors_are_also_type_and_value_errors() -> None:
    with pytest.raises(TypeError):
        specgraph.stats(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        specgraph.compile(_plan(), "null", norm_momentum=5.0)


def test_memory_check_can_be_declined() -> None:
    model = specgraph.compile(_huge_plan(), "null", check_memory=False)  # the null backend allocates nothing
    assert model.plan.spec_name == "small"


# ---------------------------------------------------------------- real processes


# The child reports its own peak RSS (VmHWM, which, unlike ru_maxrss, does not count the pages the
# child shared with this process before exec) when it exits, however it exits.
_REPORTING_MAIN = """
import atexit, os, re, sys
def _report():
    hwm = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
    open(os.environ["SPECGRAPH_TEST_PEAK"], "w").write(hwm)
atexit.register(_report)
from specgraph.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _specgraph(*args: str, env: dict[str, str] | None = None, stdout: Any = None, cwd: Path | None = None,
               preexec_fn: Callable[[], None] | None = None) -> tuple[int, str, str, float, float]:
    """Run the command line in its own process; returns (status, stdout, stderr, seconds, peak RSS in MB)."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "peak"
        with open(Path(scratch) / "out", "w+b") as out, open(Path(scratch) / "err", "w+b") as err:
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _REPORTING_MAIN, *args],
                                  stdout=out if stdout is None else stdout, stderr=err, cwd=cwd, timeout=60,
                                  env={**os.environ, **(env or {}), "SPECGRAPH_TEST_PEAK": str(peak_file)},
                                  preexec_fn=preexec_fn)
            seconds = time.perf_counter() - start
            out.seek(0)
            err.seek(0)
            peak_mb = int(peak_file.read_text()) / 1024
            return (proc.returncode, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"),
                    seconds, peak_mb)


def _big_line(path: Path) -> None:
    path.write_text("name: " + "a" * (50 << 20) + "\n")


def _big_file(path: Path) -> None:
    path.write_text("".join(f"k{i}: {i}\n" for i in range(600_000)))


# (id, how to make the input in a tmp dir or None, args (FILE = that input), exit status, stderr fragment)
PROCESS_CASES: list[tuple[str, Callable[[Path], None] | None, list[str], int, str]] = [
    ("50-mib-line", _big_line, ["validate", "FILE"], 2, "larger than 4 MiB"),
    ("5-mib-file", _big_file, ["validate", "FILE"], 2, "larger than 4 MiB"),
    ("billion-laughs", None, ["validate", str(CORPUS / "billion-laughs.yaml")], 2, "more than 200,000 values"),
    ("deep-json", None, ["validate", str(CORPUS / "deep.json")], 2, "nested more than 32 levels deep"),
    ("deep-toml", None, ["validate", str(CORPUS / "deep-array.toml")], 2, "nested more than 32 levels deep"),
    ("deep-yaml", None, ["validate", str(CORPUS / "deep-block.yaml")], 2, "nested more than 32 levels deep"),
    ("bigint", None, ["validate", str(CORPUS / "bigint.json")], 2, "5,000 digits"),
]


@pytest.mark.parametrize(("case", "make", "args", "code", "fragment"), PROCESS_CASES,
                         ids=[c[0] for c in PROCESS_CASES])
def test_process(case: str, make: Callable[[Path], None] | None, args: list[str], code: int, fragment: str,
                 tmp_path: Path) -> None:
    if make is not None:
        work = tmp_path / "work"
        work.mkdir()
        make(work / "input.yaml")
        args = [str(work / "input.yaml") if a == "FILE" else a for a in args]
    status, _, err, seconds, rss = _specgraph(*args, cwd=tmp_path)
    assert status == code and fragment in err and "Traceback" not in err, err
    assert seconds < SECONDS and rss < MEGABYTES, (seconds, rss)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["work"] if make else [])


def test_closed_stdout_is_an_error_not_silence() -> None:
    status, _, err, _, _ = _specgraph("plan", SMALL, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    assert status == 1 and "standard output is closed" in err and "Traceback" not in err


def test_broken_pipe_is_one_line_exit_1() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "specgraph.cli", "render", "spinenet", "-v", "190"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader leaves before the command writes, like a `| head` that has had enough
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert err == "specgraph render: error: standard output was closed by the reader (broken pipe)\n"


def test_full_disk_exit_1() -> None:
    with open("/dev/full", "w") as full:
        status, _, err, _, _ = _specgraph("plan", SMALL, stdout=full)
    assert status == 1 and "No space left on device" in err and "Traceback" not in err


def test_ascii_terminal() -> None:
    env = {"PYTHONIOENCODING": "ascii", "LC_ALL": "C"}
    status, out, err, _, _ = _specgraph("stats", SMALL, "--input", "64x64", env=env)
    assert status == 0 and "params" in out, err
    status, out, err, _, _ = _specgraph("render", SMALL, "--format", "mermaid", env=env)
    assert status == 0 and "\u2193" in out, err  # a document stays UTF-8
    status, _, err, _, _ = _specgraph("validate", str(CORPUS / "name-bidi.yaml"), env=env)
    assert status == 2 and "U+202E" in err and "Traceback" not in err


def test_ctrl_c_while_reading_exits_130(tmp_path: Path) -> None:
    """A real SIGINT: the command blocks reading a named pipe, and is interrupted there."""
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    # SIGINT back to its default first: a test run started in the background inherits it ignored,
    # and Python then installs no KeyboardInterrupt handler in the child.
    proc = subprocess.Popen([sys.executable, "-m", "specgraph.cli", "validate", str(fifo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while True:  # opening the write end succeeds once the command has opened the pipe to read
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    try:
        for _ in range(12):  # Ctrl-C, again every 5 s as a user would (one should do)
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            proc.kill()
            raise AssertionError(f"no exit after SIGINT: {status}")
    finally:
        os.close(writer)
    assert proc.returncode == 130
    assert err.decode() == "specgraph validate: interrupted\n"
