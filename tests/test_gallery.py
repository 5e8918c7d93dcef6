"""docs/gallery.md and its drawings are current: written from the built-in specs by examples/gallery.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gallery_is_current() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "gallery.py"), "--check"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_gallery_lists_every_builtin_spec() -> None:
    import specgraph

    text = (ROOT / "docs" / "gallery.md").read_text(encoding="utf-8")
    for name in specgraph.builtin_specs():
        assert f"## `{name}`" in text and (ROOT / "docs" / "gallery" / f"{name}.svg").is_file()
        if specgraph.load(name).inputs:  # a decoder names the compositions that use it
            assert "; composed in [`" in text.split(f"## `{name}`")[1].split("\n## ")[0]
    assert "| 50 | 2..5 | 256, 512, 1024, 2048 | 23,561,152 |" in text  # Model Garden's ResNet-50 count
