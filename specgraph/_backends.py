"""Backend registry: plugins are found through the ``specgraph.backends`` entry-point group.

A backend entry point names an object (usually a module) that satisfies
:class:`specgraph.backend_api.Backend`: ``compile(plan, *, spec=None, check_memory=True,
**options) -> model`` and ``OPTIONS``. Third parties register their own the same way, in
their package's ``pyproject.toml``::

    [project.entry-points."specgraph.backends"]
    mybackend = "my_package.backend"
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ._errors import ArgumentError, BackendError, BackendUnavailableError
from ._memory import check_memory
from ._options import check_options, check_plan_matches
from ._plan import Plan
from ._protocol import Backend
from ._schema import Spec
from ._text import brief

__all__ = ["ENTRY_POINT_GROUP", "available_backends", "compile", "get_backend"]

ENTRY_POINT_GROUP = "specgraph.backends"
# Install hints for the first-party backends.
_PACKAGES = {"torch": "specgraph-torch", "tensorflow": "specgraph-tensorflow"}


def available_backends() -> dict[str, EntryPoint]:
    """Installed backends by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_backend(name: str) -> Any:
    """Load the backend plugin ``name``; ``BackendUnavailableError`` says what to install when it is
    missing or fails to import."""
    if not isinstance(name, str):
        raise ArgumentError(f"backend: expected a backend name such as 'torch', got {type(name).__name__}")
    found = available_backends()
    if name not in found:
        package = _PACKAGES.get(name)
        hint = (f"install it with `pip install {package}` (from this repository: `pip install ./backends/{name}`)"
                if package else f"no installed package provides entry point {brief(name)} in group "
                f"{ENTRY_POINT_GROUP!r}")
        raise BackendUnavailableError(f"backend {brief(name)} is not installed; {hint}. "
                                      f"Installed: {', '.join(found) or 'none'}")
    try:
        backend = found[name].load()
    except Exception as exc:  # ImportError, but also MemoryError, OSError (a broken shared library)...
        raise BackendUnavailableError(f"backend {name!r} failed to import: {type(exc).__name__}: "
                                      f"{brief(str(exc), 300)}") from exc
    if not isinstance(backend, Backend):
        missing = [member for member in ("compile", "OPTIONS") if not hasattr(backend, member)]
        raise BackendError(f"backend {name!r} ({found[name].value}) does not provide the backend contract "
                           f"(specgraph.backend_api.Backend): no {' and no '.join(missing)}")
    return backend


def compile(  # noqa: A001 - the public verb, like torch.compile
    plan_or_spec: Plan | Spec | str,
    backend: str = "torch",
    *,
    variant: str | None = None,
    input_size: int | Sequence[int] | str | None = None,
    min_level: int | None = None,
    max_level: int | None = None,
    levels: Sequence[int] | None = None,
    **options: Any,
) -> Any:
    """Lower a plan (or a spec / spec name, planned first) through ``backend``.

    With a spec, ``variant``, ``input_size`` (default 640x640) and the levels (``min_level``,
    ``max_level``, or a selection such as ``levels=[3, 5]``) choose the plan, and a backend whose
    ``compile`` takes ``spec=`` receives the spec too (to keep it, e.g. in a Keras config). With a
    plan, levels given must match it.

    The shared options (``specgraph.backend_api.COMMON_OPTIONS``: ``activation``, ``frozen_bn``,
    ``freeze_at``...) are checked here, against the plan, before the backend is even loaded.

    Before the backend allocates anything, the plan's memory (``stats``: weights plus
    activations at batch 1) is checked against this machine's available memory;
    ``check_memory=False`` skips that (``ResourceError`` otherwise).
    """
    from ._loader import load
    from ._planner import plan

    spec = None
    if isinstance(plan_or_spec, str):
        plan_or_spec = load(plan_or_spec)
    if isinstance(plan_or_spec, Spec):
        spec = plan_or_spec
        check_options(options)  # before planning: a bad option is reported however long planning takes
        plan_or_spec = plan(spec, variant, (640, 640) if input_size is None else input_size, min_level, max_level,
                            levels=levels)
    elif isinstance(plan_or_spec, Plan):
        check_plan_matches(plan_or_spec, variant=variant, min_level=min_level, max_level=max_level, levels=levels)
        plan_or_spec.lint()  # a plan made by hand or read from a file: backends rely on its invariants
    else:
        raise ArgumentError(f"compile(plan_or_spec): expected a Plan, a Spec or a spec name, got "
                            f"{type(plan_or_spec).__name__}")
    check_options(options, plan=plan_or_spec)
    plugin = get_backend(backend)
    check = options.pop("check_memory", True)
    if check:
        check_memory(plan_or_spec)
    # The contract: every backend takes spec= and check_memory= (checked above, or declined).
    return plugin.compile(plan_or_spec, spec=spec, check_memory=False, **options)
