"""The backend contract: what a ``specgraph.backends`` entry point must provide.

``Backend`` is what :func:`specgraph.compile` calls; ``ConformingBackend`` adds the hooks the
conformance suite (:class:`specgraph.testing.BackendConformance`) drives, so one suite checks
every backend the same way. Both are ``runtime_checkable``: ``isinstance(module, Backend)``
checks the names are there (a module of functions qualifies).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._plan import Plan
    from ._schema import Spec
    from ._weights import LoadReport

__all__ = ["Backend", "ConformingBackend"]


@runtime_checkable
class Backend(Protocol):
    """A framework backend. ``specgraph.compile`` passes the spec it planned (or None) and
    ``check_memory=False`` (it checked the plan itself); options it does not know are the
    backend's to refuse with a :class:`specgraph.BackendError`."""

    OPTIONS: Any  # the option names ``compile`` accepts (a mapping of defaults or a sequence)

    def compile(self, plan: Plan, *, spec: Spec | None = None, check_memory: bool = True,
                **options: Any) -> Any: ...


@runtime_checkable
class ConformingBackend(Backend, Protocol):
    """A backend with the hooks the conformance suite needs: images and weights as numpy."""

    def emit(self, plan: Plan, header: dict[str, str]) -> str:
        """Standalone source for ``plan`` (``specgraph.backend_api.header(plan)`` gives ``header``)."""
        ...

    def predict(self, model: Any, images: Any) -> dict[str, Any]:
        """Inference: NCHW float32 numpy images -> ``{level: NCHW numpy array}``."""
        ...

    def count_parameters(self, model: Any) -> int:
        """Every weight the framework holds, norm statistics included (as ``specgraph.stats`` counts)."""
        ...

    def to_structural(self, model: Any) -> dict[str, Any]:
        """``{shared weight name: numpy array}`` in TensorFlow layouts (``stem/op0/kernel`` ...)."""
        ...

    def load_structural(self, model: Any, arrays: Mapping[str, Any], *, strict: bool = True,
                        prefix: str = "") -> LoadReport:
        """Load :meth:`to_structural`'s arrays, all or nothing."""
        ...

    def emitted_model(self, source: str, model: Any) -> Any:
        """The model :meth:`emit`'s ``source`` builds (run in a fresh namespace), holding ``model``'s weights."""
        ...

    def apply_activation(self, name: str, x: Any) -> Any:
        """The backend's function for activation ``name`` applied to a numpy array, as numpy."""
        ...

    def apply_fusion(self, method: str, xs: Any, weights: Any) -> Any:
        """The backend's fusion ``method`` of NCHW numpy arrays ``xs`` with its ``weights`` (None, or the shape
        ``specgraph.backend_api.fusion_weight_shape`` gives), as an NCHW numpy array."""
        ...
