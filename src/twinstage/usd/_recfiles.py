"""The files of a recording: where chunks live, atomic writes, stale temp files, provenance values."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pxr import Sdf

from ._stage import StageError


def temp_prefix(path: Path) -> str:
    """Our save writes ``.<name>.tmp-XXXXXX<ext>`` beside ``path`` and renames it over ``path``."""
    return f".{path.name}.tmp-"


def temp_path(path: Path) -> Path:
    """A fresh temp file name beside ``path`` (see :func:`temp_prefix`)."""
    return path.with_name(f"{temp_prefix(path)}{secrets.token_hex(3)}{path.suffix}")


def _usd_or_empty(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head == b"" or head.startswith((b"PXR-USDC", b"#usda"))


def clean_stale_temp_files(path: Path) -> list[Path]:
    """Remove temp files that an interrupted save left next to ``path``.

    That is ours (``.<name>.tmp-*``) and those of ``Layer.Save`` (``<name>.XXXXXX`` and,
    for usda, ``<stem>.XXXXXX``); the latter only when they hold USD data or nothing,
    so a user's ``rec.backup`` text file survives.
    """
    prefix = temp_prefix(path)
    pat = re.compile(rf"(?:{re.escape(path.name)}|{re.escape(path.stem)})\.[A-Za-z0-9_]{{6}}$")
    removed = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            if not p.is_file() or p == path:
                continue
            if p.name.startswith(prefix) or (pat.fullmatch(p.name) and _usd_or_empty(p)):
                p.unlink()
                removed.append(p)
    return removed


def chunk_dir(path: Path) -> Path:
    """Where the chunks of recording ``path`` live: ``<stem>_<ext>.chunks/`` beside it
    (``rec.usdc`` → ``rec_usdc.chunks``: no ``.usd`` in the name, so ``*.usd*`` globs
    still find only USD files, and ``rec.usda`` beside it keeps its own chunks)."""
    return path.with_name(f"{path.stem}_{path.suffix.lstrip('.').lower()}.chunks")


def export_atomically(layer: Sdf.Layer, target: Path, tmp: Path | None = None) -> None:
    """Export ``layer`` to a temp file beside ``target``, fsync it, rename it over ``target``.

    Not ``Layer.Save()``: saving a .usdc to the file it was saved to before appends
    the changed sections (crate's incremental save), so a file saved every few
    seconds would grow without bound. A failed write leaves the previous file as it was.
    """
    tmp = tmp or temp_path(target)
    try:
        if not layer.Export(str(tmp)):
            raise StageError(f"{target}: cannot write recording")
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def to_vt_dict(d: dict[str, Any]) -> dict[str, Any]:
    """customLayerData wants plain strings/numbers/dicts; lists of mixed things become JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = to_vt_dict(v)
        elif isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif v is None:
            out[k] = ""
        else:
            out[k] = json.dumps(v, sort_keys=True, default=str)
    return out
