"""Planning speed: ``specgraph.plan`` per variant (the budget is 10 ms for SpineNet-190 @640).

Run: ``make bench`` or ``python benchmarks/bench_plan.py [--repeats N] [--json FILE]``.
"warm" plans a loaded spec (its graph is cached on it); "cold" includes parsing and
validating the spec file. Each figure is the median of ``--repeats`` runs, variants
interleaved so machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import specgraph

CASES = [("spinenet", v, 640) for v in ("49S", "49", "96", "143", "143L", "190")] + [
    ("spinenet_mobile", v, 384) for v in ("49XS", "49S", "49")
]
BUDGET_MS = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    specs = {name: specgraph.load(name) for name in {c[0] for c in CASES}}
    warm: dict[tuple, list[float]] = {c: [] for c in CASES}
    cold: dict[tuple, list[float]] = {c: [] for c in CASES}
    for _ in range(args.repeats):
        for case in CASES:
            name, variant, size = case
            t0 = time.perf_counter()
            specgraph.plan(specs[name], variant, (size, size))
            t1 = time.perf_counter()
            specgraph.plan(specgraph.load(name), variant, (size, size))
            t2 = time.perf_counter()
            warm[case].append((t1 - t0) * 1e3)
            cold[case].append((t2 - t1) * 1e3)

    rows = []
    print(f"{'spec':<16}{'variant':<8}{'input':>6}{'warm ms':>10}{'cold ms':>10}{'warm/budget':>13}")
    for case in CASES:
        w, c = statistics.median(warm[case]), statistics.median(cold[case])
        rows.append({"spec": case[0], "variant": case[1], "input": case[2], "warm_ms": w, "cold_ms": c})
        print(f"{case[0]:<16}{case[1]:<8}{case[2]:>6}{w:>10.2f}{c:>10.2f}{w / BUDGET_MS:>13.2f}")
    worst = max(statistics.median(warm[c]) for c in CASES)
    print(f"slowest warm plan: {worst:.2f} ms = {worst / BUDGET_MS:.2f}x the {BUDGET_MS:.0f} ms budget")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"repeats": args.repeats, "budget_ms": BUDGET_MS, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
