"""Names that file artefacts (ONNX, SavedModel signatures, TFLite signatures) give a model's outputs.

The Python models of every backend return ``{level: tensor}`` with level keys ``"3"`` ... ``"7"``.
A file format wants names that stand on their own (a bare ``"3"`` is a poor tensor name, and
some tools reject names that start with a digit), so every artefact names the output of level
``k`` ``level_k`` (a decoder's input of level ``k``: ``features_k``). The rule lives here once,
framework-free, for every backend's exporters.
"""

from __future__ import annotations

__all__ = ["input_name", "output_name"]


def output_name(level: str) -> str:
    """The name of the output holding ``level``'s feature map in a file artefact: ``"3"`` -> ``"level_3"``."""
    return f"level_{level}"


def input_name(level: str) -> str:
    """The name of a decoder's input of ``level`` in a file artefact: ``"3"`` -> ``"features_3"`` (not ``level_3``:
    an ONNX graph's inputs and outputs share one namespace)."""
    return f"features_{level}"
