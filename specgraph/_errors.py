"""The exception hierarchy: every failure specgraph reports is a ``SpecgraphError``.

::

    SpecgraphError                 bad input of any kind; ``problems`` locates each one
    ├── SpecSyntaxError            not readable as a spec: syntax, encoding, size and nesting caps
    ├── SpecValidationError        a field is missing, unknown, of the wrong type or out of bounds
    ├── GraphError                 the blocks do not form a network (references, cycles, outputs)
    ├── PlanError                  no plan for this variant, input size or levels
    ├── ArgumentError              a public function got an argument of the wrong type or value
    │                              (also a TypeError and a ValueError, for callers that catch those)
    ├── ResourceError              the model would not fit in this machine's memory
    ├── BackendError               a backend refuses a plan or an option
    │   ├── BackendUnavailableError    the backend is not installed, or fails to import
    │   └── WeightsError           weights that do not fit a model; nothing was loaded
    ├── CodegenError               emitted source failed to render or to parse, or cannot be written
    └── SearchError                a search space gave no valid spec within its `tries`
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ArgumentError",
    "BackendError",
    "BackendUnavailableError",
    "CodegenError",
    "GraphError",
    "PlanError",
    "Problem",
    "ResourceError",
    "SearchError",
    "SpecSyntaxError",
    "SpecValidationError",
    "SpecgraphError",
    "WeightsError",
]


@dataclass(frozen=True)
class Problem:
    """One located problem: ``file:line: path: message``."""

    message: str
    path: str = ""
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        elif self.line:
            where = f"line {self.line}: "
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class SpecgraphError(Exception):
    """Base class of every error specgraph raises on bad input.

    ``problems`` holds every located problem found (validation reports them all at
    once); the message lists them one per line.
    """

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def path(self) -> str:
        return self.problems[0].path if self.problems else ""

    @property
    def line(self) -> int | None:
        return self.problems[0].line if self.problems else None


class SpecSyntaxError(SpecgraphError):
    """The file is not valid TOML/YAML, or not a mapping at the top."""


class SpecValidationError(SpecgraphError):
    """A field is missing, unknown, of the wrong type or out of bounds."""


class GraphError(SpecgraphError):
    """The blocks do not form a valid network: unknown references, cycles, duplicate outputs..."""


class PlanError(SpecgraphError):
    """A plan cannot be made for the requested variant, input size or levels."""


class ArgumentError(SpecgraphError, TypeError, ValueError):
    """A public function got an argument of the wrong type or value; the message names the argument."""

    @classmethod
    def expect(cls, value: object, types: type | tuple[type, ...], argument: str, what: str) -> None:
        """Raise unless ``value`` is one of ``types`` (a bool is never taken for an int):
        ``argument: expected <what>, got <its type>``."""
        wanted = types if isinstance(types, tuple) else (types,)
        if (isinstance(value, bool) and bool not in wanted) or not isinstance(value, wanted):
            raise cls(Problem(f"expected {what}, got {type(value).__name__}", argument))


class ResourceError(SpecgraphError):
    """The planned model needs more memory than the machine has; the message gives both figures."""


class BackendError(SpecgraphError):
    """A backend is missing, fails to import, or refuses a plan or an option."""


class BackendUnavailableError(BackendError):
    """The backend is not installed, or importing it failed (the message says what to install)."""


class WeightsError(BackendError):
    """Weights that do not fit the model: every missing, extra, mis-shaped, mistyped or non-finite
    array is a ``Problem`` (``path`` = the weight's name). The model is left exactly as it was."""



class CodegenError(SpecgraphError):
    """Emitted source failed to render or to parse, or cannot be written."""


class SearchError(SpecgraphError):
    """A search space drew no valid spec within its ``tries`` (the message gives the last rejection)."""
