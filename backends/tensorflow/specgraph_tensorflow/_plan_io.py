"""Rebuild a ``Plan`` from ``Plan.to_dict()`` (for configs of plans that no spec can reproduce)."""

from __future__ import annotations

from typing import Any

from specgraph import BackendError, Conv, Edge, MaxPool, Node, Plan, Unit, Upsample

__all__ = ["plan_from_dict"]

_OPS = {"conv": Conv, "maxpool": MaxPool, "upsample": Upsample}


def _tuple2(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1]))


def _op(data: dict[str, Any]) -> Conv | MaxPool | Upsample:
    data = dict(data)
    cls = _OPS[data.pop("op")]
    data["size"] = _tuple2(data["size"])
    return cls(**data)


def _edge(data: dict[str, Any]) -> Edge:
    return Edge(**{**data, "ops": tuple(_op(o) for o in data["ops"])})


def _unit(data: dict[str, Any]) -> Unit:
    return Unit(**{**data, "in_size": _tuple2(data["in_size"]), "size": _tuple2(data["size"])})


def _node(data: dict[str, Any]) -> Node:
    return Node(**{**data, "size": _tuple2(data["size"]), "inputs": tuple(_edge(e) for e in data["inputs"]),
                   "ops": tuple(_op(o) for o in data["ops"]), "units": tuple(_unit(u) for u in data["units"])})


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """The inverse of ``Plan.to_dict()``; checks the stored hash when there is one."""
    data = dict(data)
    expected = data.pop("hash", None)
    plan = Plan(**{**data, "input_size": _tuple2(data["input_size"]),
                   "nodes": tuple(_node(n) for n in data["nodes"]),
                   "endpoints": tuple((str(k), str(v)) for k, v in data["endpoints"]),
                   "pruned": tuple(data.get("pruned", ()))})
    if expected is not None and plan.hash != expected:
        raise BackendError("plan dict does not match its hash (edited or from another specgraph version)")
    return plan
