"""The benchmark suite's bookkeeping (``benchmarks/run.py``): ratios, targets, build rounds, GPU section.

The measurements themselves run for most of an hour and are not part of the test run; what is
tested here is that the report says what the numbers say. The worker is replaced by canned
results whose ratios are worked out by hand below.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("specgraph_benchmarks_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ratio_is_our_time_over_model_gardens(bench):
    assert bench.ratio(50.0, 100.0) == "0.50x"
    assert bench.ratio(130.0, 100.0) == "1.30x"
    assert bench.ratio(None, 100.0) == bench.ratio(50.0, None) == "n/a"


def _lat(mg: float, **others: float) -> dict[str, dict]:
    return {"modelgarden": {"median_ms": mg}, **{k.replace("_", "-"): {"median_ms": v} for k, v in others.items()}}


def test_targets_rows_follow_the_issue_limits(bench):
    lat = {
        ("spinenet", "49", 640, 1): _lat(600.0, torch_opt=420.0, torch_eager=900.0, tf=600.0, tf_xla=540.0),
        ("mobile", "49", 384, 1): _lat(40.0, torch_opt=30.0, torch_eager=80.0, tf=44.0, tf_xla=44.0),
    }
    alt = {("mobile", "49", 384, 1): {"modelgarden": 40.0, "tf": 41.0, "tf-xla": 36.0}}
    builds = {("spinenet", "49", 640): {"modelgarden": {"build_s": 10.0}, "tf": {"build_s": 6.0},
                                        "torch": {"build_s": 0.5}}}
    train = {"modelgarden": {"peak_rss_mb": 1000.0}, "tf": {"peak_rss_mb": 990.0}, "torch": {"peak_rss_mb": 900.0}}
    rows = {target: (measured, met) for target, measured, met in bench.targets(lat, builds, train, alt)}

    measured, met = rows["SpineNet-49 @640 b1: torch optimised <= 0.75x Model Garden"]
    assert "420 ms vs 600 ms = **0.70x**" in measured and "eager 1.50x" in measured and met == "yes"
    measured, met = rows["Mobile-49 @384 b1: torch optimised <= 0.5x Model Garden"]
    assert "**0.75x**" in measured and met == "no, by 0.250x"
    # TF: 600/600 = 1.00x and 44/40 = 1.10x -> one of two over 1.05x; alternated: 41/40 = 1.02x
    measured, met = rows["specgraph TF <= 1.05x Model Garden"]
    assert measured.startswith("1.00x-1.10x (worst mobile-49@384 b1)") and met == "no on 1 of 2 cases"
    assert rows["specgraph TF <= 1.05x Model Garden (alternated in one process, b1)"][1] == "yes"
    # XLA: 540/600 = 0.90x, 44/40 = 1.10x; alternated 36/40 = 0.90x
    assert rows["TF XLA faster than Model Garden"][1] == "no on 1 of 2 cases"
    assert rows["TF XLA faster than Model Garden (alternated in one process, b1)"][1] == "yes"
    assert rows["build spinenet-49: torch <= 0.1x Model Garden"] == ("0.50 s vs 10.00 s = **0.05x**", "yes")
    assert rows["build spinenet-49: tf <= 0.5x Model Garden"] == ("6.00 s vs 10.00 s = **0.60x**", "no, by 0.100x")
    assert rows["training-step peak RSS: torch <= Model Garden"] == ("900 MB vs 1000 MB = **0.90x**", "yes")


def test_targets_leave_out_what_failed_to_run(bench):
    lat = {("spinenet", "49", 640, 1): {"modelgarden": {"error": "boom"}, "torch-opt": {"median_ms": 1.0},
                                        "torch-eager": {}, "tf": {}, "tf-xla": {}}}
    train = {"modelgarden": {"error": "boom"}, "tf": {}, "torch": {"peak_rss_mb": 1.0}}
    assert bench.targets(lat, {}, train, {}) == []


def test_builds_alternate_contenders_and_take_the_median(bench, monkeypatch):
    seconds = {"modelgarden": [9.0, 11.0, 10.0], "tf": [5.0, 4.0, 6.0], "torch": [1.0, 3.0, 2.0]}
    calls = []

    def fake_work(task, contender, *args, **kwargs):
        calls.append(contender)
        if contender == "tf" and calls.count("tf") == 2:
            return {"error": "one build failed"}
        return {"build_s": seconds[contender][calls.count(contender) - 1]}

    monkeypatch.setattr(bench, "work", fake_work)
    res = bench.median_builds(("spinenet", "49", 640), 3, threads=2)
    assert calls == ["modelgarden", "tf", "torch"] * 3  # round by round, not contender by contender
    assert res["modelgarden"]["build_s"] == 10.0 and res["torch"]["build_s"] == 2.0
    assert res["tf"]["all_s"] == [5.0, 6.0] and res["tf"]["build_s"] == 5.5  # the failed build is left out

    errors = iter(["first: out of memory", "second: ImportError"] * 3)
    monkeypatch.setattr(bench, "work", lambda *a, **k: {"error": next(errors)})
    res = bench.median_builds(("mobile", "49", 384), 2, threads=2)
    assert res["torch"] == {"error": "every build round failed: second: ImportError"}  # the worker's own text


def test_target_latencies_rotate_contenders_over_rounds_and_take_the_median(bench, monkeypatch):
    ms = {"modelgarden": [300.0, 350.0, 340.0], "tf": [1.0, 2.0, 3.0], "tf-xla": [1.0, 1.0, 1.0],
          "torch-eager": [9.0, 8.0, 7.0], "torch-opt": [250.0, 200.0, 260.0]}
    calls = []

    def fake_work(task, contender, *args, **kwargs):
        assert task == "latency" and args[:4] == ("spinenet", "49", 640, 1)
        calls.append(contender)
        if contender == "tf-xla" and calls.count("tf-xla") == 3:
            return {"error": "one run failed"}
        return {"median_ms": ms[contender][calls.count(contender) - 1], "min_ms": 0.0}

    monkeypatch.setattr(bench, "work", fake_work)
    res = bench.latency_rounds(("spinenet", "49", 640, 1), 3, runs=10, threads=2)
    order = bench.LATENCY
    assert calls == order + order[1:] + order[:1] + order[2:] + order[:2]  # a new order each round
    assert res["modelgarden"] == {"median_ms": 340.0, "rounds_ms": [300.0, 350.0, 340.0]}
    assert res["torch-opt"]["median_ms"] == 250.0  # so the target ratio reads 250 / 340
    assert res["tf-xla"]["rounds_ms"] == [1.0, 1.0]  # the failed round is left out
    # One round: the worker's own result, as before.
    calls.clear()
    assert bench.latency_rounds(("spinenet", "49", 640, 1), 1, 10, 2)["tf"] == {"median_ms": 1.0, "min_ms": 0.0}
    monkeypatch.setattr(bench, "work", lambda task, contender, *a, **k: {"error": f"{contender} crashed"})
    for rounds in (1, 2):  # one round too: the worker's own error text, not a generic one
        assert bench.latency_rounds(("mobile", "49", 384, 1), rounds, 10, 2)["tf"] == {
            "error": "every latency round failed: tf crashed"}


def test_gpu_section_says_when_there_is_no_gpu(bench, monkeypatch):
    monkeypatch.setattr(bench, "work", lambda task, contender, *a, **k: {
        "skipped": "no CUDA device" if contender == "torch" else "no GPU visible to TensorFlow"})
    text = bench.run_gpu(type("Args", (), {"runs": 10, "threads": 2})())
    assert text == "## GPU\n\nNo GPU on this machine: no CUDA device; no GPU visible to TensorFlow.\n"


def test_gpu_section_quotes_images_per_second_against_model_garden(bench, monkeypatch):
    ips = {"modelgarden": 10.0, "tf": 12.5, "torch": 20.0}
    monkeypatch.setattr(bench, "work", lambda task, contender, *a, **k: {"images_per_s": ips[contender]})
    text = bench.run_gpu(type("Args", (), {"runs": 10, "threads": 2})())
    row = next(line for line in text.splitlines() if line.startswith("| SpineNet-49 |"))
    # our time over Model Garden's: 10 / 20 = 0.50x for torch, 10 / 12.5 = 0.80x for TF
    assert row == "| SpineNet-49 | 10.0 (1.00x MG time) | 12.5 (0.80x MG time) | 20.0 (0.50x MG time) |"


@pytest.mark.parametrize(("flags", "isa"), [
    ("fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16", "AVX-512, avx512_bf16"),
    ("fpu sse2 avx avx2 fma", "AVX2"),
    ("fpu sse2", "no AVX"),
])
def test_cpu_description_names_model_and_vector_isa(bench, tmp_path, flags, isa):
    block = f"processor\t: {{n}}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n" \
            f"model name\t: AMD EPYC 7B13\nflags\t\t: {flags}\n"
    info = tmp_path / "cpuinfo"
    info.write_text(block.format(n=0) + "\n" + block.format(n=1).replace("AMD EPYC 7B13", "other"))
    assert bench.cpu_description(info) == f"AMD EPYC 7B13 (family 25 model 1, {isa})"
    assert bench.cpu_description(tmp_path / "missing")  # no /proc: still says something


@pytest.mark.parametrize("report", ["docs/benchmarks.md", "out/benchmarks-quick.md"])
def test_report_links_the_hand_written_analysis_from_where_it_is_written(bench, report):
    line = bench.analysis_pointer(ROOT / report)
    link = line.split("](", 1)[1].split(")", 1)[0]
    target = (ROOT / report).parent.joinpath(link).resolve()
    assert target == ROOT / "docs" / "performance.md" and target.is_file()
