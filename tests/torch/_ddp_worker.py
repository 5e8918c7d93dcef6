"""Training runs for the DDP equivalence test (tests/torch/test_distributed.py).

The test imports this file for the single-process reference and runs it as a script, once per
rank: ``python _ddp_worker.py WORKDIR RANK WORLD_SIZE``. Each rank loads ``WORKDIR/initial.pt``,
does every run of ``RUNS`` on its slice of each global batch under DistributedDataParallel or
FSDP2 (gloo), and saves each run's last gradients and final state dict to ``WORKDIR/rank{RANK}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

import specgraph

SPEC = Path(__file__).parent.parent / "data" / "small.toml"
SIZE = (64, 64)
GLOBAL_BATCH = 4


class Run(NamedTuple):
    sync_bn: bool
    dtype: torch.dtype
    steps: int
    wrap: str = "ddp"  # or "fsdp": FSDP2, fully_shard per plan node, then the root


# float64 shows the algorithm is exact. In float32 both sides carry rounding error that BN
# over few values per channel (level 5 is 2x2 here) amplifies, so that run is a single step.
RUNS = {
    "sync64": Run(True, torch.float64, 2),  # step 2: updated weights, non-empty momentum buffer
    "plain64": Run(False, torch.float64, 2),  # without SyncBN: must NOT match
    "fsdp64": Run(True, torch.float64, 2, wrap="fsdp"),
    "sync32": Run(True, torch.float32, 1),
}


def build(sync_bn: bool) -> nn.Module:
    plan = specgraph.plan(specgraph.load(SPEC), input_size=SIZE)
    return specgraph.compile(plan, backend="torch", use_sync_bn=sync_bn)


def global_batches(run: Run) -> list[torch.Tensor]:
    """The same NCHW batches in every process."""
    return [torch.randn(GLOBAL_BATCH, 3, *SIZE, generator=torch.Generator().manual_seed(step)).to(run.dtype)
            for step in range(run.steps)]


def loss_fn(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Depends on every level; a mean, so the loss of the global batch is the mean of the ranks' losses."""
    return sum(out.square().mean() for out in outputs.values())


def train(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """SGD with momentum over ``batches``: the last step's gradients and the final state dict."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for images in batches:
        optimizer.zero_grad()
        loss_fn(model(images)).backward()  # under DDP / FSDP, .grad is the mean over the ranks
        optimizer.step()
    net = model.module if isinstance(model, DistributedDataParallel) else model
    grads = {name: _full(p.grad) for name, p in net.named_parameters()}
    state = {name: _full(t) for name, t in net.state_dict().items()}
    return {"grads": grads, "state": state}


def _full(t: torch.Tensor) -> torch.Tensor:
    """A detached copy; FSDP2's sharded parameters and gradients gathered whole."""
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


def wrap(model: nn.Module, how: str, world_size: int) -> nn.Module:
    if how == "ddp":
        return DistributedDataParallel(model)
    mesh = init_device_mesh("cpu", (world_size,))
    for node in model.nodes.values():  # one FSDP unit per plan node: gathered just before it runs
        fully_shard(node, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def main(workdir: Path, rank: int, world_size: int) -> None:
    torch.set_num_threads(1)
    # A file store, not MASTER_PORT: no port to race for with other tests on the machine.
    dist.init_process_group("gloo", init_method=f"file://{workdir / 'store'}", rank=rank, world_size=world_size)
    try:
        initial = torch.load(workdir / "initial.pt")
        per_rank = GLOBAL_BATCH // world_size
        results = {}
        for name, run in RUNS.items():
            model = build(run.sync_bn).to(run.dtype)
            model.load_state_dict(initial)
            batches = [b[rank * per_rank:(rank + 1) * per_rank] for b in global_batches(run)]
            results[name] = train(wrap(model, run.wrap, world_size), batches)
        torch.save(results, workdir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
