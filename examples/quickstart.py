"""The main job: compile a SpineNet spec, run it, print its stats, draw it.

    make demo        (or: python examples/quickstart.py [--variant 49S] [--input 640x640] [--out out/])
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import specgraph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="spinenet")
    parser.add_argument("--variant", default="49S")
    parser.add_argument("--input", default="640x640")
    parser.add_argument("--out", default="out", help="folder for the drawing")
    args = parser.parse_args()

    spec = specgraph.load(args.spec)
    plan = specgraph.plan(spec, args.variant, args.input)
    print(plan.table())

    s = specgraph.stats(plan)
    print(f"\n{spec.name} {plan.variant} @ {args.input}: {s.params:,} parameters "
          f"({s.trainable_params:,} trainable), {s.macs / 1e9:.3f} GMACs")

    import torch

    model = specgraph.compile(plan, backend="torch").eval()
    images = torch.randn(1, 3, *plan.input_size)
    with torch.inference_mode():
        t0 = time.perf_counter()
        features = model(images)
        elapsed = time.perf_counter() - t0
    print(f"\nran the torch model in {elapsed * 1e3:.0f} ms (first call, eager):")
    for level, tensor in features.items():
        print(f"  level {level}: {tuple(tensor.shape)}")
    counted = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))
    print(f"  parameters + BN statistics in the module: {counted:,} (stats: {s.params:,})")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    drawing = out / f"{spec.name}-{plan.variant}.svg"
    drawing.write_text(specgraph.render_svg(plan))
    print(f"\ndrew the plan: {drawing}")


if __name__ == "__main__":
    main()
