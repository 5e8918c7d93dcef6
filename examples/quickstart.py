"""The main job: plan a SpineNet spec, print its plan and stats, run it through a backend."""

from __future__ import annotations

import specgraph


def main() -> None:
    spec = specgraph.load("spinenet")
    plan = specgraph.plan(spec, variant="49S", input_size=(640, 640))
    print(plan.table())
    s = specgraph.stats(plan)
    print(f"\nSpineNet-49S @640: {s.params:,} parameters ({s.trainable_params:,} trainable), "
          f"{s.macs / 1e9:.3f} GMACs")
    model = specgraph.compile(plan, backend="null")
    print("null backend output shapes:", model((1, 3, 640, 640)))


if __name__ == "__main__":
    main()
