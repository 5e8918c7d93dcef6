"""One benchmark measurement in a fresh process; prints one JSON line.

Called by ``benchmarks/run.py``; every contender gets its own process with the same
thread settings, so imports, caches and allocators never leak between them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import specgraph

FAMILY = {"spinenet": "spinenet", "mobile": "spinenet_mobile", "resnet": "resnet"}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn: Callable[[], Any], warmup: int, runs: int, sync: Callable[[Any], Any] = lambda r: r) -> list[float]:
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
    return times


# ----------------------------------------------------------------- frameworks


def _setup_torch(threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    return torch


def _setup_tf(threads: int) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def _modelgarden_model(family: str, variant: str, size: tuple[int, int]) -> Any:
    """Model Garden's own model of the plan, built from its tables by the TF backend's reference builder
    (``specgraph.backend_api.MODELGARDEN_BACKBONES``): the benchmark does not restate them."""
    from specgraph_tensorflow._mg_weights import modelgarden_reference

    return modelgarden_reference(_plan(family, variant, size))


def _plan(family: str, variant: str, size: tuple[int, int]) -> specgraph.Plan:
    return specgraph.plan(specgraph.load(FAMILY[family]), variant, size)


def _build(contender: str, family: str, variant: str, size: tuple[int, int], device: str = "cpu") -> Any:
    """The model object of ``contender`` (not yet traced or compiled)."""
    if contender == "modelgarden":
        return _modelgarden_model(family, variant, size)
    if contender.startswith("tf"):
        return specgraph.compile(_plan(family, variant, size), backend="tensorflow", input_shape=(*size, 3))
    return specgraph.compile(_plan(family, variant, size), backend="torch").to(device).eval()


def _runner(contender: str, model: Any, batch: int, size: tuple[int, int], device: str) -> Callable[[], Any]:
    if contender in ("modelgarden", "tf", "tf-xla"):
        import tensorflow as tf

        fn = tf.function(lambda x: model(x, training=False), jit_compile=contender == "tf-xla")
        x = tf.random.stateless_normal([batch, size[0], size[1], 3], seed=[0, 1])
        return lambda: {k: v.numpy() for k, v in fn(x).items()}
    import specgraph_torch
    import torch

    x = torch.randn(batch, 3, *size, device=device)
    if contender == "torch-opt":
        specgraph_torch.reuse_freed_memory()  # part of the optimised path: TF's CPU allocator caches too
        model = specgraph_torch.optimize_for_inference(model)
        x = x.contiguous(memory_format=torch.channels_last)

    def run() -> Any:
        with torch.inference_mode():
            out = model(x)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


# ----------------------------------------------------------------- tasks


def latency(args: argparse.Namespace) -> dict:
    size = (args.size, args.size)
    (_setup_torch if args.contender.startswith("torch") else _setup_tf)(args.threads)
    model = _build(args.contender, args.family, args.variant, size)
    run = _runner(args.contender, model, args.batch, size, "cpu")
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    times = _time(run, args.warmup, args.runs)
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3,
            "runs": len(times), "first_call_s": first}


def alternating(args: argparse.Namespace) -> dict:
    """Several TF contenders (comma-separated) in one process, calls rotated round by round.

    The machine's load swings between processes; alternating calls in one process puts
    every contender under the same load, so their ratio is steadier than separate medians.
    """
    size = (args.size, args.size)
    _setup_tf(args.threads)
    names = args.contender.split(",")
    runs = {c: _runner(c, _build(c, args.family, args.variant, size), args.batch, size, "cpu") for c in names}
    for run in runs.values():
        _time(run, args.warmup, 0)
    times: dict[str, list[float]] = {c: [] for c in names}
    for i in range(args.runs):
        for c in names[i % len(names):] + names[:i % len(names)]:
            times[c].extend(_time(runs[c], 0, 1))
    return {"medians": {c: statistics.median(t) * 1e3 for c, t in times.items()}}


def build(args: argparse.Namespace) -> dict:
    size = (args.size, args.size)
    (_setup_torch if args.contender == "torch" else _setup_tf)(args.threads)
    _build(args.contender, "mobile", "49XS", (128, 128))  # warm-up build: imports and lazy init
    t0 = time.perf_counter()
    _build(args.contender, args.family, args.variant, size)
    return {"build_s": time.perf_counter() - t0}


def ceiling(args: argparse.Namespace) -> dict:
    """Throughput of one large 3x3 conv (1x128x128x256 -> 256) in the same framework."""
    gflop = 2 * 128 * 128 * 256 * 256 * 9 / 1e9
    if args.contender == "torch":
        torch = _setup_torch(args.threads)
        conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).eval().to(memory_format=torch.channels_last)
        x = torch.randn(1, 256, 128, 128).contiguous(memory_format=torch.channels_last)

        def run() -> Any:
            with torch.inference_mode():
                return conv(x)
    else:
        tf = _setup_tf(args.threads)
        w = tf.random.normal([3, 3, 256, 256])
        x = tf.random.normal([1, 128, 128, 256])
        fn = tf.function(lambda x: tf.nn.conv2d(x, w, 1, "SAME"))

        def run() -> Any:
            return fn(x).numpy()

    times = _time(run, 2, max(args.runs, 10))
    return {"gflops": gflop / statistics.median(times), "best_gflops": gflop / min(times)}


def train(args: argparse.Namespace) -> dict:
    """Forward + backward + SGD step at batch ``args.batch``; time and peak RSS."""
    size = (args.size, args.size)
    base_rss = _rss_mb()
    if args.contender == "torch":
        torch = _setup_torch(args.threads)
        model = _build("torch", args.family, args.variant, size).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        x = torch.randn(args.batch, 3, *size)

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            loss = sum(v.float().square().mean() for v in model(x).values())
            loss.backward()
            opt.step()
            return float(loss)
    else:
        tf = _setup_tf(args.threads)
        import tf_keras

        model = _build(args.contender, args.family, args.variant, size)
        opt = tf_keras.optimizers.SGD(1e-3, momentum=0.9)
        x = tf.random.stateless_normal([args.batch, size[0], size[1], 3], seed=[0, 1])

        @tf.function
        def tf_step() -> Any:
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                loss = tf.add_n([tf.reduce_mean(tf.square(v)) for v in out.values()])
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        def step() -> float:
            return float(tf_step())

    times = _time(step, 2, args.runs)
    return {"median_ms": statistics.median(times) * 1e3, "peak_rss_mb": _rss_mb(), "base_rss_mb": base_rss}


def gpu(args: argparse.Namespace) -> dict:
    """images/s at ``size`` on CUDA: bf16 autocast + channels_last + torch.compile (torch), or
    mixed_bfloat16 + XLA (TensorFlow)."""
    size = (args.size, args.size)
    if args.contender == "torch":
        torch = _setup_torch(args.threads)
        if not torch.cuda.is_available():
            return {"skipped": "no CUDA device"}
        model = _build("torch", args.family, args.variant, size, "cuda").to(memory_format=torch.channels_last)
        fast = torch.compile(model, mode="max-autotune")
        x = torch.randn(args.batch, 3, *size, device="cuda").contiguous(memory_format=torch.channels_last)

        def run() -> Any:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                out = fast(x)
            torch.cuda.synchronize()
            return out
    else:
        tf = _setup_tf(args.threads)
        if not tf.config.list_physical_devices("GPU"):
            return {"skipped": "no GPU visible to TensorFlow"}
        import tf_keras

        tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = _build(args.contender, args.family, args.variant, size)
        fn = tf.function(lambda x: model(x, training=False), jit_compile=True)
        x = tf.random.stateless_normal([args.batch, size[0], size[1], 3], seed=[0, 1])

        def run() -> Any:
            return {k: v.numpy() for k, v in fn(x).items()}

    times = _time(run, 5, args.runs)
    return {"images_per_s": args.batch / statistics.median(times), "median_ms": statistics.median(times) * 1e3}


TASKS = {"latency": latency, "alternating": alternating, "build": build, "ceiling": ceiling, "train": train, "gpu": gpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--contender", required=True)
    parser.add_argument("--family", default="spinenet", choices=FAMILY)
    parser.add_argument("--variant", default="49")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    result = TASKS[args.task](args)
    print(json.dumps({"task": args.task, **vars(args), **result}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
