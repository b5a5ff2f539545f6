"""On-disk cache of the twin attributes read from a layer, keyed by the file's content.

:func:`~twinstage.usd.read_twin` reads each spec's ``twin:*`` attributes once per
layer; for a layer backed by an unmodified file it stores them here, under the
SHA-256 of the file's bytes (plus the file format, the USD version and this
format's version), so a later open of the same bytes skips reading them through
the API. A layer that is anonymous, has unsaved edits, or lives inside a package
(``.usdz``) is never cached.

Where: ``TWINSTAGE_READ_CACHE`` (a folder; ``0``/``off`` turns it off), else
``$XDG_CACHE_HOME/twinstage/read`` (``~/.cache/twinstage/read``). Entries are
pickles of plain tuples, dicts, strings and numbers, loaded with an unpickler that
refuses every class and function, so a planted file cannot run code; a file that
does not load is ignored. The folder keeps the :data:`MAX_FILES` most recently
used entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from pxr import Sdf, Usd

from ..state import DeclarationColumns
from ._session import inert_session_layers

#: bump when the stored layout changes
FORMAT = 1
MAX_FILES = 64
_OFF = ("0", "off", "false", "no", "")


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # noqa: ARG002
        raise pickle.UnpicklingError(f"the twin read cache holds plain data only, not {module}.{name}")


def default_dir() -> Path | None:
    env = os.environ.get("TWINSTAGE_READ_CACHE")
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "twinstage" / "read"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


class Cache:
    def __init__(self, folder: Path):
        self.folder = folder

    @classmethod
    def open(cls, cache: bool | str | os.PathLike[str] | None) -> "Cache | None":
        if cache is False:
            return None
        folder = default_dir() if cache is None or cache is True else Path(cache)
        if folder is None and cache is True:
            folder = Path(os.path.expanduser("~")) / ".cache" / "twinstage" / "read"
        return cls(folder) if folder is not None else None

    def key_for(self, layer: Sdf.Layer) -> str | None:
        """The cache key of ``layer``'s content, or None where the layer is not cacheable."""
        if layer.anonymous or layer.dirty:
            return None
        real = layer.realPath
        if not real or "[" in real or not os.path.isfile(real):
            return None
        fmt = layer.GetFileFormat().formatId
        if fmt not in ("usda", "usdc", "usd"):
            return None
        try:
            digest = file_sha256(real)
        except OSError:
            return None
        version = ".".join(str(v) for v in Usd.GetVersion())
        args = layer.GetFileFormatArguments()
        if args:  # the same bytes read with other arguments may be other content
            digest += "-" + hashlib.sha256(repr(sorted(args.items())).encode()).hexdigest()[:16]
        return f"{digest}-{fmt}-usd{version}-v{FORMAT}"

    def stage_key(self, stage: Usd.Stage, keys: dict[str, str | None]) -> str | None:
        """Key of ``stage``'s whole twin description (see :func:`_stage_key`), or None."""
        return _stage_key(self, stage, keys)

    def _file(self, key: str) -> Path:
        return self.folder / f"{key}.pickle"

    def load(self, key: str) -> dict[str, Any] | None:
        p = self._file(key)
        try:
            data = p.read_bytes()
            value = _PlainUnpickler(io.BytesIO(data)).load()
        except Exception:  # noqa: BLE001 - missing, unreadable or malformed: a miss
            return None
        if not isinstance(value, dict) or value.get("key") != key or not isinstance(value.get("specs"), dict):
            return None
        with contextlib.suppress(OSError):
            os.utime(p)  # most recently used
        return value["specs"]

    def store(self, key: str, specs: dict[str, Any]) -> bool:
        """Write atomically (temp file + rename); a failure leaves no file and is not an error."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = self._file(key)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
            with tmp.open("wb") as f:
                pickle.dump({"key": key, "specs": specs}, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, target)
        except OSError:
            with contextlib.suppress(OSError, UnboundLocalError):
                tmp.unlink()
            return False
        self._prune()
        return True

    def _prune(self) -> None:
        try:
            files = sorted(self.folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        for p in files[MAX_FILES:]:
            with contextlib.suppress(OSError):
                p.unlink()


# -- the whole description of a stage ---------------------------------------------


def _stage_key(self: Cache, stage: Usd.Stage, keys: dict[str, str | None]) -> str | None:
    """Key of the whole twin description of ``stage``, or None where it cannot be cached.

    What a stage composes is a function of the content of the layers it uses and of
    how it was opened (load rules, population mask, global variant fallbacks), so the
    key hashes those; an anonymous or edited layer, or a session layer (or session
    sublayer) with an opinion, makes the stage uncacheable. A session layer that cannot
    change a value (empty, or a twin's fresh live layer: ``_session.inert_session_layers``)
    is left out of the key. ``keys`` collects each layer's key by identifier.
    """
    session = inert_session_layers(stage)
    if session is None:
        return None
    root = stage.GetRootLayer()
    parts = []
    root_key = None
    for layer in stage.GetUsedLayers():
        if layer.identifier in session:
            continue
        k = keys[layer.identifier] = self.key_for(layer)
        if k is None:
            return None
        if layer.identifier == root.identifier:
            root_key = k
        parts.append(k)
    if root_key is None:
        return None
    how = repr((
        sorted((str(p), str(r)) for p, r in stage.GetLoadRules().GetRules()),
        str(stage.GetPopulationMask()),
        sorted((k, list(v)) for k, v in Usd.Stage.GetGlobalVariantFallbacks().items()),
    ))
    h = hashlib.sha256("\n".join([root_key, *sorted(parts), how]).encode())
    return f"stage-{h.hexdigest()}-v{FORMAT}"


def description_to_plain(assets: list, decls: list, slow: int, layers: int) -> dict[str, Any]:
    """Assets and declarations as plain lists (strings, numbers, tuples) for the cache."""
    intern: dict[Any, Any] = {}
    paths = [a.path for a in assets]
    index = {p: i for i, p in enumerate(paths)}
    templates: dict[tuple, int] = {}
    dp, dt, dv = [], [], []
    for d in decls:
        t = (d.name, d.type, d.unit, d.min, d.max, d.role, d.drives, d.description)
        ti = templates.get(t)
        if ti is None:
            ti = templates[t] = len(templates)
        dp.append(index[d.prim])
        dt.append(ti)
        dv.append(d.value)
    return {
        "paths": paths,
        "fields": [[intern.setdefault(x, x) for x in col] for col in zip(*((a.kind, a.asset_id, a.model) for a in assets))] if assets else [[], [], []],
        "templates": list(templates),
        "decl_prim": dp,
        "decl_template": dt,
        "decl_value": dv,
        "slow_prims": slow,
        "layers": layers,
    }


_TEMPLATE_TYPES = (str, str, str, float, float, str, str, str)  # name, type, unit, min, max, role, drives, description
_TWIN_TYPES = ("float", "int", "bool", "vec3")


def description_from_plain(plain: dict[str, Any], asset_cls: Any, trusted: bool = False) -> tuple[list, list, int]:
    """Inverse of :func:`description_to_plain`; raises on a malformed entry (``trusted``: made in
    this process by a reader, not loaded from disk — the per-value type checks are skipped)."""
    paths = plain["paths"]
    kinds, ids, models = plain["fields"]
    if not (len(paths) == len(kinds) == len(ids) == len(models)):
        raise ValueError("malformed description")
    if not trusted and not all(type(x) is str for col in (paths, kinds, ids, models) for x in col):
        raise ValueError("malformed description")
    if "__slots__" in vars(asset_cls) or list(getattr(asset_cls, "__dataclass_fields__", ())) != ["path", "kind", "asset_id", "model"]:
        assets = [asset_cls(p, k, i, m) for p, k, i, m in zip(paths, kinds, ids, models)]
    else:  # a frozen dataclass's __init__ pays object.__setattr__ per field: set its __dict__ at once
        new, set_ = object.__new__, object.__setattr__
        assets = []
        append = assets.append
        for p, k, i, m in zip(paths, kinds, ids, models):
            a = new(asset_cls)
            set_(a, "__dict__", {"path": p, "kind": k, "asset_id": i, "model": m})
            append(a)
    templates = plain["templates"]
    for t in templates:
        if type(t) is not tuple or tuple(map(type, t)) != _TEMPLATE_TYPES or t[1] not in _TWIN_TYPES:
            raise ValueError("malformed description")
    dp, dt, dv = plain["decl_prim"], plain["decl_template"], plain["decl_value"]
    if not (len(dp) == len(dt) == len(dv)):
        raise ValueError("malformed description")
    if not trusted:
        if not set(map(type, dv)) <= {float, int, bool, tuple} or not set(map(type, dp)) | set(map(type, dt)) <= {int}:
            raise ValueError("malformed description")
        if any(b < a for a, b in zip(dp, dp[1:])):  # declarations come per asset, in asset order
            raise ValueError("malformed description")
    try:  # (index ranges checked here)
        decls = DeclarationColumns(templates, paths, dp, dt, dv)
    except (ValueError, TypeError, OverflowError):
        raise ValueError("malformed description") from None
    return assets, decls, int(plain["slow_prims"])


def stored_form(plain: dict[str, Any]) -> dict[str, Any]:
    """A reader's plain description with its numpy columns as lists (what the cache pickles and loads)."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in plain.items()}
