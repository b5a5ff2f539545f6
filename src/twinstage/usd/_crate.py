"""The structure of a USD crate (``.usdc``) file, read with numpy in one pass, no pxr.

``Usd.Stage.Open`` parses a crate file's structural sections in C++, but pxr gives
Python no bulk access to them: reading the ``twin:*`` values of 10k machines through
``Sdf``/``Usd`` costs ~6 µs per attribute. This module reads the same sections
(tokens, strings, fields, field sets, paths, specs — the layout of OpenUSD's
``crateFile.cpp``, versions 0.4.0 and newer) into numpy arrays, so that
:mod:`._crate_twin` can pick out every twin attribute of a layer with array
operations. It is read-only and never trusted blindly: any inconsistency raises
:class:`CrateError`, and the caller then reads through pxr as before.

Sections (all little-endian): an 88-byte bootstrap (``PXR-USDC``, version, offset of
the table of contents); the table (``uint64`` count, then 16-byte name + ``int64``
start + ``int64`` size per section). Structural integer arrays are "compressed
ints": a ``uint64`` byte count, then an LZ4 block (``TfFastCompression``: a leading
chunk-count byte) of ``Sdf_IntegerCompression`` data — the most common delta, 2-bit
codes per value (common / int8 / int16 / int32 delta), the variable-size deltas.
A value is a 64-bit ``ValueRep``: array/inlined/compressed flag bits, a type enum in
bits 48–55, a 48-bit payload (the value itself when inlined, else a file offset).
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

import numpy as np

MAGIC = b"PXR-USDC"

# crateDataTypes.h (stable numbers: they are the file format)
BOOL, UCHAR, INT, UINT, INT64, UINT64, HALF, FLOAT, DOUBLE, STRING, TOKEN = range(1, 12)
VEC3D, VEC3F, VEC3H, VEC3I = 23, 24, 25, 26
TOKEN_LIST_OP, PATH_LIST_OP, REFERENCE_LIST_OP = 32, 34, 35
TOKEN_VECTOR, SPECIFIER, PAYLOAD, PAYLOAD_LIST_OP = 41, 42, 47, 55
# SdfSpecType
ATTRIBUTE, PRIM, PSEUDO_ROOT, VARIANT, VARIANT_SET = 1, 6, 7, 10, 11

_ARRAY = np.uint64(1 << 63)
_INLINED = np.uint64(1 << 62)
_PAYLOAD = np.uint64((1 << 48) - 1)
_CODES4 = ((np.arange(256, dtype=np.uint8)[:, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3).astype(np.uint8)  # code byte -> 4 codes
# code byte -> its 4 values' delta sizes (bytes: 0 common, 1, 2, 4) / sign-extension shifts, packed
# into one uint32 so that one take per code byte, viewed as uint8, gives them per value
_SIZE4 = np.array([0, 1, 2, 4], np.uint8)[_CODES4].view(np.uint32).ravel()
_SHIFT4 = np.array([0, 24, 16, 0], np.uint8)[_CODES4].view(np.uint32).ravel()
_CHUNK = 1 << 16  # values per step of decode_ints (its temporaries stay in cache)


class CrateError(ValueError):
    """The bytes are not a crate file this reader understands; the message says what was wrong."""


def is_crate(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == MAGIC
    except OSError:
        return False


def _lz4(data: memoryview, max_size: int) -> bytes:
    import lz4.block

    if not data:
        raise CrateError("empty compressed block")
    chunks = data[0]
    try:
        if chunks == 0:
            return lz4.block.decompress(data[1:], uncompressed_size=max_size)
        out, pos = [], 1
        for _ in range(chunks):
            (n,) = struct.unpack_from("<i", data, pos)
            if n < 0 or pos + 4 + n > len(data):
                raise CrateError("compressed chunk runs past its section")
            out.append(lz4.block.decompress(data[pos + 4 : pos + 4 + n], uncompressed_size=max_size))
            max_size -= len(out[-1])
            pos += 4 + n
        return b"".join(out)
    except lz4.block.LZ4BlockError as exc:
        raise CrateError(f"corrupt LZ4 block ({exc})") from None


def decode_ints(raw: bytes, n: int) -> np.ndarray:
    """``Sdf_IntegerCompression`` data (after LZ4) of ``n`` 32-bit ints, as int32 (wrapping, as the C++
    decoder's running sum does; a uint32 above 2^31 reads negative, which callers reject as an index).
    Per cache-sized chunk: delta sizes (packed table per code byte), their running sum (byte offsets),
    one gather from the little-endian word at each byte, a shift pair to sign-extend, ``common``."""
    if n == 0:
        return np.zeros(0, np.int32)
    ncode = (2 * n + 7) // 8
    if len(raw) < 4 + ncode:
        raise CrateError(f"integer block of {len(raw)} bytes is too short for {n} values")
    b = np.frombuffer(raw, np.uint8)
    common = np.int32(int.from_bytes(raw[:4], "little", signed=True))
    cb = b[4 : 4 + ncode]
    nv = len(raw) - 4 - ncode
    sizes = np.take(_SIZE4, cb).view(np.uint8)[:n]
    need = int(np.add.reduce(sizes, dtype=np.int64))
    if need > nv:
        raise CrateError(f"integer block holds {nv} bytes of deltas, its codes need {need}")
    buf = np.zeros(nv + 4, np.uint8)  # a 1-byte delta at the very end still reads 4 bytes
    buf[:nv] = b[4 + ncode :]
    words = np.ndarray((nv + 1,), "<u4", buffer=buf, strides=(1,)).astype(np.uint32)  # word at each byte
    del buf
    shifts = np.take(_SHIFT4, cb).view(np.uint8)[:n]
    out = np.empty(n, np.int32)
    starts = np.empty(min(n, _CHUNK), np.intp)
    base = 0
    for s in range(0, n, _CHUNK):
        sz, sh, o = sizes[s : s + _CHUNK], shifts[s : s + _CHUNK], out[s : s + _CHUNK]
        st = starts[: len(sz)]
        np.cumsum(sz, dtype=np.intp, out=st)
        st -= sz
        st += base
        base = int(st[-1]) + int(sz[-1])
        w = words.take(st)
        w <<= sh
        np.right_shift(w.view(np.int32), sh, out=o)
        np.copyto(o, common, where=sz == 0)
    return np.cumsum(out, dtype=np.int32, out=out)


class Crate:
    """The structural sections of one crate file (see the module docstring).

    ``tokens`` (str), ``strings`` (token index per string), ``field_token`` /
    ``field_rep`` per field, ``fieldsets`` (field indexes, ``0xFFFFFFFF`` ends a set),
    per path index ``path_parent`` (-1 for the root), ``path_token`` and
    ``path_is_prop``, per spec ``spec_path``, ``spec_fieldset``, ``spec_type``.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 88:
                raise CrateError(f"{path}: {size} bytes, too small for a crate file")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.data = memoryview(self._map)
        self.bytes = np.frombuffer(self._map, np.uint8)
        # no count a file claims may exceed this (a real file holds < 1 spec per byte of it): a
        # hostile header cannot make this reader allocate more than a few hundred bytes per file byte
        self.max_items = 8 * size + 1024
        try:
            self._read_all()
        except CrateError as exc:
            if str(path) in str(exc):
                raise
            raise CrateError(f"{path}: {exc}") from None
        except (IndexError, ValueError, OverflowError, struct.error, UnicodeDecodeError) as exc:
            raise CrateError(f"{path}: corrupt crate file ({type(exc).__name__}: {exc})") from None

    def _read_all(self) -> None:
        path = self.path
        if bytes(self.data[:8]) != MAGIC:
            raise CrateError(f"{path}: not a crate file (no PXR-USDC header)")
        self.version = tuple(self.data[8:11])
        if self.version[0] != 0 or self.version[1] < 4:
            raise CrateError(f"{path}: crate version {'.'.join(map(str, self.version))} (this reader needs 0.4.0 or newer)")
        (toc,) = struct.unpack_from("<q", self.data, 16)
        self.sections = self._toc(toc)
        self.tokens = self._read_tokens()
        self.strings = self._read_strings()
        self._read_fields()
        self._read_fieldsets()
        self._read_paths()
        self._read_specs()

    def close(self) -> None:
        """Unmap the file (arrays still viewing it keep the mapping until they are gone)."""
        self.bytes = np.zeros(0, np.uint8)
        getattr(self, "_field_cache", {}).clear()
        try:
            self.data.release()
            self._map.close()
        except BufferError:
            pass

    # -- primitive reads ------------------------------------------------------------
    def u64(self, pos: int) -> int:
        if pos < 0 or pos + 8 > len(self.data):
            raise CrateError(f"read of 8 bytes at offset {pos} is outside the file ({len(self.data)} bytes)")
        return struct.unpack_from("<Q", self.data, pos)[0]

    def _ints(self, pos: int, n: int) -> tuple[np.ndarray, int]:
        size = self.u64(pos)
        start, end = pos + 8, pos + 8 + size
        if end > len(self.data) or n > self.max_items:
            raise CrateError(f"compressed integers at offset {pos}: {n} values in {size} bytes do not fit the file")
        raw = _lz4(self.data[start:end], 4 + (2 * n + 7) // 8 + 4 * n)
        return decode_ints(raw, n), end

    def _section(self, name: str) -> tuple[int, int]:
        try:
            return self.sections[name]
        except KeyError:
            raise CrateError(f"{self.path}: no {name} section") from None

    def _toc(self, pos: int) -> dict[str, tuple[int, int]]:
        n = self.u64(pos)
        if n > 64 or pos + 8 + 32 * n > len(self.data):
            raise CrateError(f"{self.path}: table of contents at offset {pos} claims {n} sections")
        out = {}
        for i in range(n):
            name, start, size = struct.unpack_from("<16sqq", self.data, pos + 8 + 32 * i)
            label = name.rstrip(b"\0").decode("ascii", "replace")
            if start < 0 or size < 0 or start + size > len(self.data):
                raise CrateError(f"{self.path}: section {label!r} runs past the end of the file")
            out[label] = (start, size)
        return out

    # -- sections -----------------------------------------------------------------------
    def _read_tokens(self) -> list[str]:
        pos, size = self._section("TOKENS")
        n, raw_size, comp = self.u64(pos), self.u64(pos + 8), self.u64(pos + 16)
        if pos + 24 + comp > len(self.data) or raw_size > 255 * comp + 64 or n > raw_size or raw_size > self.max_items:
            raise CrateError(f"{self.path}: TOKENS section sizes do not fit the file")
        raw = _lz4(self.data[pos + 24 : pos + 24 + comp], raw_size)
        parts = raw.split(b"\0")
        if len(parts) < n:
            raise CrateError(f"{self.path}: TOKENS claims {n} tokens, holds {len(parts) - 1}")
        try:
            return [p.decode("utf-8") for p in parts[:n]]
        except UnicodeDecodeError:
            raise CrateError(f"{self.path}: a token is not UTF-8") from None

    def _read_strings(self) -> np.ndarray:
        pos, _ = self._section("STRINGS")
        n = self.u64(pos)
        if pos + 8 + 4 * n > len(self.data):
            raise CrateError(f"{self.path}: STRINGS claims {n} strings past the end of the file")
        s = np.frombuffer(self._map, np.uint32, n, pos + 8).astype(np.int64)  # small: kept wide
        if n and s.max() >= len(self.tokens):
            raise CrateError(f"{self.path}: a string names token {int(s.max())} of {len(self.tokens)}")
        return s

    def _read_fields(self) -> None:
        pos, _ = self._section("FIELDS")
        n = self.u64(pos)
        tok, pos = self._ints(pos + 8, n)
        size = self.u64(pos)
        if 8 * n > 255 * size + 64:
            raise CrateError(f"{self.path}: FIELDS claims {n} value reps in {size} bytes")
        if pos + 8 + size > len(self.data):
            raise CrateError(f"{self.path}: FIELDS value reps run past the end of the file")
        raw = _lz4(self.data[pos + 8 : pos + 8 + size], 8 * n)
        if len(raw) != 8 * n:
            raise CrateError(f"{self.path}: FIELDS holds {len(raw) // 8} value reps for {n} fields")
        if n and (tok.max() >= len(self.tokens) or tok.min() < 0):
            raise CrateError(f"{self.path}: a field names token {int(tok.max())} of {len(self.tokens)}")
        self.field_token = tok
        self.field_rep = np.frombuffer(raw, np.uint64)

    def _read_fieldsets(self) -> None:
        pos, _ = self._section("FIELDSETS")
        n = self.u64(pos)
        fs, _ = self._ints(pos + 8, n)
        term = fs == -1  # 0xFFFFFFFF
        if n and (not term[-1] or fs.min() < -1 or fs.max() >= len(self.field_token)):
            raise CrateError(f"{self.path}: corrupt field sets")
        self.fieldsets = fs
        idx = np.arange(n, dtype=np.int32)
        last = np.maximum.accumulate(np.where(term, idx, -1))
        start = np.empty(n, np.int32)
        if n:
            start[0] = 0
            start[1:] = last[:-1] + 1
        self._fs_start = start
        self._fs_term = term
        self._field_cache: dict[str, np.ndarray] = {}
        self._fs_entries: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _read_paths(self) -> None:
        pos, _ = self._section("PATHS")
        total, n = self.u64(pos), self.u64(pos + 8)
        if n > total or total > n + 16 or total > self.max_items:
            raise CrateError(f"{self.path}: PATHS claims {n} encoded of {total} paths")
        index, p = self._ints(pos + 16, n)
        elem, p = self._ints(p, n)
        jumps, _ = self._ints(p, n)
        self.path_known = np.zeros(total, bool)
        if n:
            lo, hi = int(elem.min()), int(elem.max())
            if index.min() < 0 or index.max() >= total or lo <= -(2**31) or max(hi, -lo) >= len(self.tokens):
                raise CrateError(f"{self.path}: corrupt path table")
            self.path_known[index] = True
            if int(np.count_nonzero(self.path_known)) != n:
                raise CrateError(f"{self.path}: a path index is repeated")
        src = np.flatnonzero(jumps > 0)  # nodes with a child and a sibling: the sibling is src + jump
        tgt = src + jumps[src]
        if n and (jumps.min() < -2 or (len(tgt) and int(tgt.max()) >= n)):
            raise CrateError(f"{self.path}: corrupt path jumps")
        self.path_parent = np.full(total, -1, np.int32)
        self.path_parent[index] = self._path_parents(index, jumps, src, tgt) if n else -1
        self.path_token, self.path_is_prop = np.zeros(total, np.int32), np.zeros(total, bool)
        self.path_token[index] = np.abs(elem)
        self.path_is_prop[index] = elem < 0

    def _path_parents(self, index: np.ndarray, jumps: np.ndarray, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        """Parent path index (-1: root) per node of a pre-order path tree (n >= 1). A node's parent is the
        node before it when that one has a child, else its sibling's: the node before it when that one
        has only a sibling (a "link"), else the node whose jump lands on it. A run of links shares its
        first node's (its head's) parent, so heads resolve by pointer jumping, then nodes take theirs."""
        n = len(jumps)
        head_start = np.empty(n, bool)  # a node whose node before is not a link starts a run
        head_start[0] = True
        np.not_equal(jumps[:-1], 0, out=head_start[1:])
        heads = np.flatnonzero(head_start)
        run = np.cumsum(head_start, dtype=np.int64 if n >= 1 << 31 else np.int32)
        run -= 1  # node -> its head's number
        before = jumps[np.maximum(heads - 1, 0)]
        direct = (before > 0) | (before == -1)
        direct[0] = True
        same = np.full(len(heads), -1, np.int64)  # the node whose jump lands on a head
        at_head = heads[run[tgt]] == tgt
        same[run[tgt[at_head]]] = src[at_head]
        lost = ~direct & (same < 0)
        if lost.any():
            raise CrateError(f"{self.path}: path table node {int(heads[np.argmax(lost)])} has no parent")
        link = np.where(direct, np.arange(len(heads)), run[np.maximum(same, 0)])  # head -> head
        todo = np.flatnonzero(~direct)
        for _ in range(64):
            if not len(todo):
                break
            link[todo] = link[link[todo]]
            todo = todo[~direct[link[todo]]]
        else:
            raise CrateError(f"{self.path}: path table siblings form a cycle")
        rep = heads[link]  # a direct head: its parent is the node before it
        parent = np.where(rep > 0, index[np.maximum(rep - 1, 0)], -1).astype(np.int32)
        return parent[run]

    def _read_specs(self) -> None:
        pos, _ = self._section("SPECS")
        n = self.u64(pos)
        paths, p = self._ints(pos + 8, n)
        fsets, p = self._ints(p, n)
        types, _ = self._ints(p, n)
        if n and (min(paths.min(), fsets.min(), types.min()) < 0 or paths.max() >= len(self.path_parent) or not self.path_known.take(paths).all() or fsets.max() >= len(self.fieldsets)):
            raise CrateError(f"{self.path}: a spec names a path or field set that does not exist")
        # the set before a spec's set ends just before it (set 0: index -1, the last entry, which ends a set)
        if n and not self._fs_term.take(fsets - 1).all():
            raise CrateError(f"{self.path}: a spec's field set does not start a set")
        self.spec_path, self.spec_fieldset, self.spec_type = paths, fsets, types

    # -- queries ------------------------------------------------------------------------
    def token_index(self, text: str) -> int:
        """Index of a token (-1: the file has no such token)."""
        try:
            return self.tokens.index(text)
        except ValueError:
            return -1

    def field_names(self) -> set[str]:
        seen = np.zeros(len(self.tokens), bool)
        seen[self.field_token] = True
        return {self.tokens[i] for i in np.flatnonzero(seen).tolist()}

    def field(self, name: str, specs: np.ndarray) -> np.ndarray:
        """Field index (-1: not authored) of field ``name`` for each spec index in ``specs``."""
        by_set = self._field_cache.get(name)
        if by_set is None:
            if self._fs_entries is None:  # once: set start, field, field token of each field-set entry
                at = np.flatnonzero(~self._fs_term)
                fidx = self.fieldsets.take(at)
                self._fs_entries = (self._fs_start.take(at), fidx, self.field_token.take(fidx))
            start, fidx, ftok = self._fs_entries
            by_set = np.full(len(self.fieldsets), -1, np.int32)
            tok = self.token_index(name)
            if tok >= 0:
                hit = np.flatnonzero(ftok == tok)
                by_set[start.take(hit)] = fidx.take(hit)
            self._field_cache[name] = by_set
        return by_set.take(self.spec_fieldset.take(specs))

    def reps(self, fields: np.ndarray) -> np.ndarray:
        """Value reps of field indexes (0 where the index is -1)."""
        if not len(self.field_rep):
            return np.zeros(len(fields), np.uint64)
        out = self.field_rep.take(fields, mode="clip")  # -1 reads rep 0, then zeroed
        np.copyto(out, np.uint64(0), where=fields < 0)
        return out

    def path_strings(self, paths: np.ndarray) -> list[str]:
        """Prim path strings of path indexes (memoised over ancestors)."""
        memo = getattr(self, "_path_memo", None)
        if memo is None:
            memo = self._path_memo = {}
        parent, token, tokens, is_prop = self.path_parent, self.path_token, self.tokens, self.path_is_prop

        def one(p: int) -> str:
            s = memo.get(p)
            if s is None:
                q = int(parent[p])
                if q < 0:
                    s = "/"
                else:
                    head = one(q)
                    sep = "." if is_prop[p] else "/"
                    s = (head if head != "/" or sep == "." else "") + sep + tokens[token[p]]
                memo[p] = s
            return s

        return [one(int(p)) for p in paths]

    def read_vector(self, offset: int, item: str) -> list[Any]:
        """A ``uint64`` count followed by that many ``struct`` items (e.g. ``"I"``) at ``offset``."""
        n = self.u64(offset)
        size = struct.calcsize("<" + item)
        if offset + 8 + n * size > len(self.data):
            raise CrateError(f"{self.path}: a vector at offset {offset} runs past the end of the file")
        return list(struct.iter_unpack("<" + item, self.data[offset + 8 : offset + 8 + n * size]))
