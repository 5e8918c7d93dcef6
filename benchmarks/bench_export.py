"""Export times with dynamic batch and H/W: specgraph's SpineNets against torchvision's ResNet-18.

    python benchmarks/bench_export.py [--rounds 2] [--onnx]

One process, contenders alternated round by round, each export from a fresh model; the figure
is the median wall time and its ratio to ResNet-18 exported the same way (the reference the
export issue quotes: a plain CNN of the same framework, 2 s here). A benchmark, not a test:
the tests check that the exported programs are exact at several sizes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import specgraph_torch
import torch
import torchvision
from run import cpu_description  # benchmarks/run.py, beside this script

import specgraph

CASES = [("spinenet", "49S"), ("spinenet", "49"), ("spinenet_mobile", "49")]


def _resnet18_export(onnx: Path | None) -> Callable[[], object]:
    model = torchvision.models.resnet18().eval()
    example = torch.randn(2, 3, 224, 224)
    dim = torch.export.Dim
    shapes = ({0: dim("batch", min=1, max=1024), 2: dim("height", min=33, max=16384),
               3: dim("width", min=33, max=16384)},)  # 2**5 + 1, as specgraph: no level of 1 pixel
    if onnx is not None:
        return lambda: torch.onnx.export(model, (example,), str(onnx), dynamo=True, dynamic_shapes=shapes)
    return lambda: torch.export.export(model, (example,), dynamic_shapes=shapes)


def _spinenet_export(spec: str, variant: str, onnx: Path | None) -> Callable[[], object]:
    model = specgraph_torch.compile(specgraph.plan(spec, variant, 640)).eval()
    example = torch.randn(1, 3, 640, 640)
    if onnx is not None:
        return lambda: specgraph_torch.to_onnx(model, onnx, example)
    return lambda: specgraph_torch.export(model, example)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--onnx", action="store_true", help="time torch.onnx.export (dynamo) instead of torch.export")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "model.onnx" if args.onnx else None
        contenders = {"resnet18 (torchvision)": _resnet18_export(onnx)}
        contenders |= {f"{spec} {variant}": _spinenet_export(spec, variant, onnx) for spec, variant in CASES}
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, run in contenders.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
    what = "torch.onnx.export (dynamo)" if args.onnx else "torch.export"
    print(f"{what}, dynamic batch + H + W, torch {torch.__version__}, {cpu_description()},"
          f" 2 threads, median of {args.rounds}\n")
    print("| model | seconds | vs resnet18 |\n|---|---|---|")
    reference = statistics.median(times["resnet18 (torchvision)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median / reference:.2f}x |")


if __name__ == "__main__":
    main()
