"""The weights checks every backend loader runs before it touches a model.

A loader describes what the model expects under each name (:class:`Target`: a shape in
the source's layout and the dtype to convert to), hands the source's arrays to
:func:`convert_weights` and copies only what comes back: every missing, unexpected,
mis-shaped, mistyped or non-finite array is found first and raised as one
:class:`~specgraph.WeightsError`, so a failed load leaves the model as it was.

numpy is imported inside the functions: every backend installs it, the core does not need it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import ArgumentError, Problem, WeightsError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LoadReport", "Target", "check_weights", "convert_weights", "first_line", "read_npz", "select_weights"]

# Why an array of each refused dtype kind cannot become a float weight.
_REFUSED_KINDS = {"b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "text", "S": "bytes",
                  "V": "raw or structured records", "M": "dates", "m": "time spans"}


@dataclass(frozen=True)
class Target:
    """What the model expects under one name.

    ``shape`` is in the source's layout (a loader that transposes works out the source shape);
    ``dtype`` is what the array is converted to; ``note`` says where the weight goes, for messages.
    """

    shape: tuple[int, ...]
    dtype: Any = "float32"
    note: str = ""


@dataclass(frozen=True)
class LoadReport:
    """What a load did, by the model's weight names (the source's, less ``prefix``).

    ``loaded``: copied into the model; ``missing``: the model's weights the source lacked (they
    keep their values); ``unexpected``: the source's names (under ``prefix``) that the model has
    no weight for; ``ignored``: the source's names outside ``prefix``. A strict load has neither
    missing nor unexpected names (it raises instead).
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    prefix: str = ""
    file: str | None = None

    @property
    def complete(self) -> bool:
        """Every weight of the model was loaded."""
        return not self.missing

    def __str__(self) -> str:
        source = f" from {self.file}" if self.file else ""
        under = f" (source names under {self.prefix!r}, prefix stripped)" if self.prefix else ""
        lines = [f"loaded {len(self.loaded)} of {len(self.loaded) + len(self.missing)} weights{source}{under}"]
        for label, names in (("missing (left as they were)", self.missing),
                             ("unexpected (not in the model, not loaded)", self.unexpected)):
            if names:
                lines.append(f"{label}: {len(names)}")
                lines += [f"  {name}" for name in names[:_SHOWN]]
                if len(names) > _SHOWN:
                    lines.append(f"  ... and {len(names) - _SHOWN} more")
        if self.ignored:
            lines.append(f"ignored (outside the prefix): {len(self.ignored)}")
        return "\n".join(lines)


_SHOWN = 20  # names listed per kind in LoadReport's text; the fields hold them all


def select_weights(arrays: Mapping[str, Any], targets: Mapping[str, Target], *, strict: bool = True,
                   prefix: str = "", file: str | None = None,
                   problems: Iterable[Problem] = ()) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Partial loading on top of :func:`convert_weights`: ``({name: checked array}, report)``.

    With ``prefix`` only the source's names starting with it are considered, the prefix stripped
    (the backbone inside a detector's weights: ``"backbone/"``). With ``strict`` every target must
    be there and nothing else; with ``strict=False`` missing and unexpected names are reported
    instead of refused. Everything that is loaded is still checked first, all or nothing (a wrong
    shape or a NaN refuses the whole load), and a load that would copy nothing is refused.
    """
    if not isinstance(strict, bool):
        raise ArgumentError(Problem(f"expected True or False, got {type(strict).__name__}", "strict"))
    if not isinstance(prefix, str):
        raise ArgumentError(Problem(f"expected a string such as 'backbone/', got {type(prefix).__name__}", "prefix"))
    if not isinstance(arrays, Mapping):
        raise ArgumentError(Problem(f"expected a mapping of name -> array, got {type(arrays).__name__}", "source"))
    names = [str(k) for k in arrays]
    considered = {name[len(prefix):]: arrays[name] for name in names if name.startswith(prefix)}
    ignored = tuple(name for name in names if not name.startswith(prefix))
    found = list(problems)
    if prefix and not considered:
        sample = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        found.append(Problem(f"no name in the source starts with {prefix!r} (names: {sample or 'none'}); check the "
                             "prefix, e.g. 'backbone/' for a detector's backbone", "prefix", file))
        raise WeightsError(found)
    missing = tuple(name for name in targets if name not in considered)
    unexpected = tuple(name for name in considered if name not in targets)
    if strict:
        converted = convert_weights(considered, targets, file=file, problems=found)
        return converted, LoadReport(tuple(converted), (), (), ignored, prefix, file)
    present = {name: t for name, t in targets.items() if name in considered}
    if not present:
        found.append(Problem(f"nothing to load: none of the source's {len(considered)} name(s) is a weight of the "
                             f"model (e.g. {_example(unexpected)}; the model has e.g. {_example(tuple(targets))})"
                             + (f" under the prefix {prefix!r}" if prefix else ""), "source", file))
        raise WeightsError(found)
    converted = convert_weights({name: considered[name] for name in present}, present, file=file, problems=found)
    return converted, LoadReport(tuple(converted), missing, unexpected, ignored, prefix, file)


def _example(names: tuple[str, ...]) -> str:
    return repr(names[0]) if names else "none"


def check_weights(arrays: Mapping[str, Any], targets: Mapping[str, Target], *,
                  file: str | None = None) -> list[Problem]:
    """Every problem loading ``arrays`` into ``targets`` would meet, one per name and kind (``path`` = the name)."""
    return _check(arrays, targets, file)[1]


def convert_weights(arrays: Mapping[str, Any], targets: Mapping[str, Target], *, file: str | None = None,
                    problems: Iterable[Problem] = ()) -> dict[str, np.ndarray]:
    """``{name: array}`` for every target, converted to its dtype and checked, ready to copy.

    Raises one :class:`~specgraph.WeightsError` listing ``problems`` (found by the caller) and
    every problem of :func:`check_weights`, if there are any.
    """
    converted, found = _check(arrays, targets, file)
    found = [*problems, *found]
    if found:
        raise WeightsError(found)
    return converted


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file; a file or member that cannot be read raises :class:`~specgraph.WeightsError`.

    Object arrays are refused (they would unpickle arbitrary code).
    """
    import numpy as np

    file = os.fspath(path)
    try:
        # numpy guesses the format from the first bytes and reads anything else as a pickle: check them ourselves.
        with open(file, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise _Unreadable("a single .npy array, not an .npz archive of named arrays")
        if not magic.startswith(b"PK"):
            raise _Unreadable("not an .npz archive (not a zip file)" if magic else "an empty file")
        data = np.load(file, allow_pickle=False)
    except Exception as exc:  # numpy surfaces OS, zip, zlib and format errors of many types: all mean "unreadable"
        raise WeightsError(Problem(f"cannot read weights: {_why_unreadable(exc)}", file=file)) from exc
    arrays: dict[str, np.ndarray] = {}
    problems: list[Problem] = []
    with data:
        for name in data.files:
            try:
                arrays[name] = data[name]
            except Exception as exc:  # a truncated or corrupt member, or a pickled object array
                problems.append(Problem(f"cannot read this array ({type(exc).__name__}: {first_line(exc)})", name,
                                        file))
    if problems:
        raise WeightsError(problems)
    return arrays


class _Unreadable(Exception):
    """A file read_npz refuses before numpy sees it; the message says why."""


def _why_unreadable(exc: Exception) -> str:
    if isinstance(exc, _Unreadable):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "a directory, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"not a valid .npz archive ({type(exc).__name__}: {first_line(exc)})"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for a one-line problem."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


def _check(arrays: Mapping[str, Any], targets: Mapping[str, Target],
           file: str | None) -> tuple[dict[str, np.ndarray], list[Problem]]:
    problems = [Problem(f"missing from the source (expected shape {list(t.shape)}{_for(t)})", name, file)
                for name, t in targets.items() if name not in arrays]
    problems += [Problem(f"unexpected: the model has no weight of this name (source {_describe(v)})", name, file)
                 for name, v in arrays.items() if name not in targets]
    converted = {}
    for name, target in targets.items():
        if name in arrays:
            array, messages = _convert(arrays[name], target)
            problems += [Problem(m, name, file) for m in messages]
            if not messages:
                converted[name] = array
    return converted, problems


def _for(target: Target) -> str:
    return f" for {target.note}" if target.note else ""


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"shape {list(shape)}" if shape is not None else f"value: {type(value).__name__}"


def _convert(value: Any, target: Target) -> tuple[np.ndarray | None, list[str]]:
    """``value`` as an array of ``target.dtype``, or None and every reason it cannot be one."""
    import numpy as np

    array, why = _as_array(value)
    if array is None:
        return None, [why]
    dtype = np.dtype(target.dtype)
    messages = []
    if tuple(array.shape) != tuple(target.shape):
        messages.append(f"shape {list(array.shape)} does not fit: expected {list(target.shape)}{_for(target)}")
    if not _numeric(array.dtype):
        kind = _REFUSED_KINDS.get(array.dtype.kind, "not numbers")
        messages.append(f"dtype {array.dtype} ({kind}) cannot be converted to {dtype}: floating and integer "
                        "arrays only")
        return None, messages
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, as a non-finite value
            converted = array.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        return None, [*messages, f"dtype {array.dtype} cannot be converted to {dtype}: {first_line(exc)}"]
    finite = np.isfinite(converted)
    if not finite.all():
        messages.append(_non_finite(array, converted, ~finite, dtype))
    return converted, messages


def _as_array(value: Any) -> tuple[np.ndarray | None, str]:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value, ""
    if value is None or isinstance(value, str | bytes):
        return None, f"not an array: got {type(value).__name__}"
    try:
        array = np.asarray(value)
    except Exception as exc:  # a ragged list, a tensor numpy cannot view...: whatever asarray rejects
        return None, f"not an array: got {type(value).__name__} ({first_line(exc)})"
    if array.dtype.kind == "O":  # e.g. a list holding None: numpy keeps the Python objects
        return None, f"not an array of numbers: got {type(value).__name__} of Python objects"
    return array, ""


def _numeric(dtype: np.dtype) -> bool:
    """Floating or integer: numpy's own, or ml_dtypes' (bfloat16, float8, int4...), which numpy calls 'V'."""
    if dtype.kind in "fiu":
        return True
    module = getattr(dtype.type, "__module__", "") or ""
    return (dtype.kind == "V" and dtype.names is None and module.split(".")[0] == "ml_dtypes"
            and dtype.name.startswith(("bfloat", "float", "int", "uint")))


def _non_finite(array: np.ndarray, converted: np.ndarray, bad: np.ndarray, dtype: np.dtype) -> str:
    import numpy as np

    first = np.unravel_index(int(np.argmax(bad)), bad.shape)
    where = f"index {[int(i) for i in first]}"
    values = converted[bad].astype(np.float64)
    counts = {"NaN": int(np.isnan(values).sum()), "+inf": int((values == np.inf).sum()),
              "-inf": int((values == -np.inf).sum())}
    kinds = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    original = array[first]
    if np.isfinite(np.asarray(original).astype(np.float64)):  # finite in the source: the conversion overflowed
        return f"{int(bad.sum())} value(s) too large for {dtype} ({kinds}); the first, {original}, at {where}"
    return f"{int(bad.sum())} non-finite value(s) ({kinds}); the first at {where}"
