"""A compiled model trains under DistributedDataParallel and FSDP2 (gloo, 2 CPU processes, SyncBN) as one
process does on the whole global batch. See docs/distributed.md."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch
from specgraph_torch._ops import SyncBatchNorm2d
from torch import nn

WORKER = Path(__file__).with_name("_ddp_worker.py")
WORLD_SIZE = 2
TIMEOUT_S = 180  # a hung collective fails the test instead of blocking CI
TOL = 1e-5
# float32 gradients: the single-process float32 run itself is ~1.2e-4 from its float64 twin.
TOL_GRADS_FP32 = 1e-3


def _worker() -> ModuleType:
    # --import-mode=importlib puts no test directory on sys.path: load the helper by path.
    spec = importlib.util.spec_from_file_location("_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch(workdir: Path) -> list[subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, str(WORKER), str(workdir), str(rank), str(WORLD_SIZE)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for rank in range(WORLD_SIZE)]


def _wait(procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    try:
        logs = [p.communicate(timeout=max(deadline - time.monotonic(), 1))[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"DDP workers did not finish within {TIMEOUT_S}s")
    for rank, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log}"


def _max_diff(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], keys: list[str]) -> float:
    """``max |ours - ref| / max(1, max |ref|)`` over ``keys``: absolute for small values, relative for large."""
    return max(float((ours[k].double() - ref[k].double()).abs().max() / max(1.0, float(ref[k].abs().max())))
               for k in keys)


def _diffs(ours: dict[str, dict[str, torch.Tensor]], ref: dict[str, dict[str, torch.Tensor]]) -> dict[str, float]:
    assert ours["state"].keys() == ref["state"].keys()
    params = list(ref["grads"])
    running = [k for k in ref["state"] if k.endswith(("running_mean", "running_var"))]
    assert all(torch.equal(ours["state"][k], ref["state"][k]) for k in ref["state"] if k.endswith("_tracked"))
    return {"grads": _max_diff(ours["grads"], ref["grads"], params),
            "weights": _max_diff(ours["state"], ref["state"], params),
            "running stats": _max_diff(ours["state"], ref["state"], running)}


@pytest.mark.slow
def test_ddp_sync_bn_step_equals_single_process(tmp_path: Path) -> None:
    """DDP (and FSDP2) with SyncBN on 2 ranks: gradients, weights, running stats as one process."""
    worker = _worker()
    torch.manual_seed(0)
    model = worker.build(sync_bn=True)
    assert all(isinstance(m, SyncBatchNorm2d) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    torch.save(model.state_dict(), tmp_path / "initial.pt")
    procs = _launch(tmp_path)
    # Meanwhile the references: one process, the whole global batch, per dtype and step count; with
    # no process group the sync norms are plain batch norms.
    runs = {(run.dtype, run.steps): run for run in worker.RUNS.values()}
    refs = {key: worker.train(copy.deepcopy(model).to(run.dtype), worker.global_batches(run))
            for key, run in runs.items()}
    _wait(procs)

    measured = {}
    for rank in range(WORLD_SIZE):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        for name, run in worker.RUNS.items():
            measured[rank, name] = _diffs(out[name], refs[run.dtype, run.steps])
    print("max difference from the single-process run:", *measured.items(), sep="\n  ")
    for rank in range(WORLD_SIZE):
        for name in ("sync64", "fsdp64"):
            assert all(d <= TOL for d in measured[rank, name].values()), (name, measured[rank, name])
        fp32 = measured[rank, "sync32"]
        assert fp32["grads"] <= TOL_GRADS_FP32 and fp32["weights"] <= TOL and fp32["running stats"] <= TOL, fp32
        # Without SyncBN each rank normalises by its own half's statistics: far from the reference,
        # so the match is the synchronisation at work, not a loose comparison.
        assert all(d > 1e3 * TOL for d in measured[rank, "plain64"].values()), measured[rank, "plain64"]


def test_sync_bn_without_process_group_is_batch_norm() -> None:
    """Single-process use (and checkpoints) are unchanged: BatchNorm2d's keys, outputs and running stats."""
    torch.manual_seed(0)
    sync, plain = SyncBatchNorm2d(8, eps=1e-3, momentum=0.01), nn.BatchNorm2d(8, eps=1e-3, momentum=0.01)
    with torch.no_grad():
        for t in (sync.weight, sync.bias, sync.running_mean):
            t.normal_()
    plain.load_state_dict(sync.state_dict())
    assert sync.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(3, 8, 5, 5)
    assert torch.equal(sync(x), plain(x))
    assert all(torch.equal(a, b) for a, b in zip(sync.state_dict().values(), plain.state_dict().values(), strict=True))
    sync.eval()
    plain.eval()
    assert torch.equal(sync(x), plain(x))
