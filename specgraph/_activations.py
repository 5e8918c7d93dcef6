"""Activations: every name a spec or a compile option may use, and what each one computes.

Defined here once, framework-free; each backend maps the canonical names to its framework's
functions (and a test checks every backend against these formulas and against the other
backend). The formulas are Model Garden's (``official.modeling.tf_utils.get_activation``, as its
SpineNet builders call it): e.g. ``gelu`` is the tanh approximation there, and
``hard_sigmoid`` scales by 0.16667, not 1/6.
"""

from __future__ import annotations

from ._errors import BackendError

__all__ = ["ACTIVATIONS", "ALIASES", "FORMULAS", "canonical_activation"]

# Canonical name -> what it computes (for people; the test suite holds its own numpy versions).
FORMULAS: dict[str, str] = {
    "relu": "max(x, 0)",
    "relu6": "min(max(x, 0), 6)",
    "swish": "x * sigmoid(x)",
    "hard_swish": "x * relu6(x + 3) / 6",
    "hard_sigmoid": "relu6(x + 3) * 0.16667",
    "sigmoid": "1 / (1 + exp(-x))",
    "tanh": "tanh(x)",
    "elu": "x if x > 0 else exp(x) - 1",
    "gelu": "0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))  (the tanh approximation)",
    "mish": "x * tanh(softplus(x))",
    "leaky_relu": "x if x > 0 else 0.2 x  (tf.nn.leaky_relu's default alpha)",
    "linear": "x",
}

# Other names Model Garden accepts for the same functions.
ALIASES: dict[str, str] = {"silu": "swish", "simple_swish": "swish", "identity": "linear"}

ACTIVATIONS: tuple[str, ...] = (*FORMULAS, *ALIASES)  # every accepted name


def canonical_activation(name: str) -> str:
    """The canonical name for ``name`` (``silu`` -> ``swish``); :class:`BackendError` for an unknown one."""
    if isinstance(name, str) and name in FORMULAS:
        return name
    if isinstance(name, str) and name in ALIASES:
        return ALIASES[name]
    raise BackendError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
