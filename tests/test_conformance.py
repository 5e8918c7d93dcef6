"""The backend conformance suite (``specgraph.testing.BackendConformance``) run against both
first-party backends: the same checks, against the core's references, for each."""

from __future__ import annotations

import pytest

from specgraph.testing import BackendConformance

pytest.importorskip("specgraph_torch")  # torch before TensorFlow
pytest.importorskip("specgraph_tensorflow")


class TestTorchBackend(BackendConformance):
    backend = "torch"


class TestTensorflowBackend(BackendConformance):
    backend = "tensorflow"


def test_the_registry_holds_backends_to_the_contract(tmp_path, monkeypatch):
    """A plugin without OPTIONS is refused by name; a minimal one gets spec= and check_memory=False."""
    from importlib.metadata import EntryPoint

    import specgraph
    from specgraph import _backends

    (tmp_path / "sg_incomplete.py").write_text("def compile(plan, **options):\n    return plan\n")
    (tmp_path / "sg_minimal.py").write_text(
        "OPTIONS = ()\n"
        "def compile(plan, *, spec=None, check_memory=True, **options):\n"
        "    return {'plan': plan, 'spec': spec, 'check_memory': check_memory, 'options': options}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    group = _backends.ENTRY_POINT_GROUP
    monkeypatch.setattr(_backends, "available_backends", lambda: {
        name: EntryPoint(name, f"sg_{name}", group) for name in ("incomplete", "minimal")})
    with pytest.raises(specgraph.BackendError, match=r"backend contract.*no OPTIONS"):
        specgraph.get_backend("incomplete")
    spec = specgraph.load("spinenet")
    built = specgraph.compile(spec, backend="minimal", variant="49S", input_size=64)
    assert built["spec"] is spec and built["check_memory"] is False and built["options"] == {}
    assert built["plan"].variant == "49S"
