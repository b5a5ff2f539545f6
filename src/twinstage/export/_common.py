"""What every exporter shares: errors, atomic writes, opening a scene or a run, the up-axis note."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pxr import Sdf, Usd

from ..usd import StageError, open_stage


class ExportError(ValueError):
    """An export or import cannot be done; the message names the file, prim or option and why."""


@contextlib.contextmanager
def atomic_output(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``out`` (same suffix); rename it onto ``out`` only on success.

    A failure (or an interrupt) removes the temporary file: no partial output is ever left at ``out``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".tmp{out.suffix}", dir=out.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.unlink()  # writers (Sdf, usdz packager) want to create the file themselves
    try:
        yield tmp_path
        if not tmp_path.exists():
            raise ExportError(f"{out}: the writer produced no file")
        os.replace(tmp_path, out)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def is_recording(path: Path) -> bool:
    """True when ``path`` is a twinstage recording (a ``<root>/TwinState`` prim with column arrays)."""
    if path.suffix.lower() not in (".usd", ".usda", ".usdc"):
        return False
    try:
        layer = Sdf.Layer.FindOrOpen(str(path))
    except Exception:
        return False
    if layer is None:
        return False
    return any(prim.nameChildren.get("TwinState") is not None for prim in layer.rootPrims)


def open_source(source: str | os.PathLike[str] | Usd.Stage) -> Usd.Stage:
    """A stage from a stage, a scene file, or a recording (composed over its scene)."""
    if isinstance(source, Usd.Stage):
        return source
    p = Path(source)
    try:
        return open_stage(p)
    except StageError as exc:
        raise ExportError(str(exc)) from None


def up_axis_note(stage: Usd.Stage) -> list[str]:
    """Warnings for referenced layers whose up axis differs from the stage's (they would lie on their side)."""
    from ..usd._validate import up_axis_mismatches

    return [f"{where}: {msg}" for where, msg in up_axis_mismatches(stage)]
