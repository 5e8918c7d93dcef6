"""Objectives for the search tests, imported by module:function as a user's would be."""

from __future__ import annotations

import time


def slow_params(spec, plan, stats) -> float:
    """The parameter count, after a pause: a trial long enough to kill a run in the middle of one."""
    time.sleep(0.4)
    return float(stats.params)


def torch_params(spec, plan, stats) -> float:
    """The parameter count of the compiled torch model: imports torch (a budget must prune before it)."""
    from specgraph_torch import count_parameters

    import specgraph

    return float(count_parameters(specgraph.compile(plan, backend="torch")))
