"""Slots: the one structural name of each weighted place in a plan (``sp3/in0/op1``, ``sp3/unit0``,
``sp3/fuse``). Every backend's weight names are a slot plus the weight's role (``/kernel``,
``/conv2/gamma``), so weights move between backends and emitted source by these names."""

from __future__ import annotations

__all__ = ["fuse_slot", "op_slot", "unit_op_slot", "unit_slot"]


def op_slot(node: str, op: int, edge: int | None = None) -> str:
    """Op ``op`` of ``node`` itself (stem, endpoint) or, with ``edge``, of its ``edge``-th input."""
    return f"{node}/op{op}" if edge is None else f"{node}/in{edge}/op{op}"


def unit_slot(node: str, unit: int) -> str:
    """Unit ``unit`` of ``node``'s block group."""
    return f"{node}/unit{unit}"


def unit_op_slot(node: str, unit: int, role: str) -> str:
    """The op ``role`` (a :class:`specgraph.UnitOp`'s) of unit ``unit`` of ``node``: ``sp3/unit0/conv2``."""
    return f"{unit_slot(node, unit)}/{role}"


def fuse_slot(node: str) -> str:
    """The weighted fusion of ``node``'s inputs."""
    return f"{node}/fuse"
