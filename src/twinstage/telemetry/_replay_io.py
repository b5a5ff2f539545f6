"""Reading recorded telemetry tables (CSV, SKAB's ``;`` CSV, Parquet) into numpy, vectorised.

:func:`read_table` returns a :class:`TableData`: one float64 array of UNIX seconds
(file order), float64 value columns, a per-cell problem code (missing field, text
in a numeric column, non-finite value) and each row's line number in the file, so
every flagged sample can say where it came from. Whole-file problems (unreadable
file, malformed row, no time column, unparsable timestamps) raise
:class:`TelemetryError` naming the file and line.

Timestamps: ISO 8601 text (``2020-03-09 10:14:33``, with or without ``T``, zone
or fraction; a time without a zone is read as UTC) or numbers — epoch seconds, or
milliseconds/microseconds/nanoseconds when ``time_unit`` says so or the values are
too large to be seconds (median above 1e11 → ms, 1e14 → µs, 1e17 → ns).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._source import TelemetryError

OK, MISSING, TEXT, NONFINITE, BACKWARDS = 0, 1, 2, 3, 4
PROBLEMS = {MISSING: "missing (empty field)", TEXT: "text in a numeric column", NONFINITE: "non-finite value", BACKWARDS: "timestamp goes backwards"}
TIME_NAMES = ("datetime", "timestamp", "time", "ts", "date", "_time")
SEPARATORS = (";", ",", "\t", "|")
_UNIT_SCALE = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


@dataclass
class TableData:
    path: str
    time: np.ndarray  # float64 UNIX seconds, file order
    columns: dict[str, np.ndarray]  # float64 values (NaN where a problem)
    problems: dict[str, np.ndarray]  # uint8 problem code per cell (only columns that have one)
    lines: np.ndarray  # int64 1-based line (CSV) or row (Parquet) of each row
    time_column: str = ""
    fmt: str = "csv"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.time)


def sniff_separator(path: str, head: bytes) -> str:
    """The separator that splits the header and the first data lines into the same number (> 1) of fields."""
    lines = [ln for ln in head.decode("utf-8", "replace").splitlines() if ln.strip()][:5]
    if not lines:
        raise TelemetryError(f"{path}: empty file (no header line)")
    best, best_n = None, 1
    for sep in SEPARATORS:  # the header's field count, matched by most of the next lines
        n = lines[0].count(sep) + 1
        same = sum(ln.count(sep) + 1 == n for ln in lines[1:])
        if n > best_n and 2 * same >= len(lines) - 1:
            best, best_n = sep, n
    if best is None:
        raise TelemetryError(f"{path}: cannot tell the separator (header {lines[0][:80]!r}); pass sep= (one of {', '.join(map(repr, SEPARATORS))})")
    return best


def _line_numbers(raw: bytes, n_rows: int) -> np.ndarray:
    """1-based line numbers of the non-blank lines after the header (what pandas keeps)."""
    a = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(a == 10)
    if not len(a) or a[-1] != 10:
        ends = np.r_[ends, len(a)]
    starts = np.r_[0, ends[:-1] + 1]
    length = ends - starts
    cr = (length > 0) & (a[np.maximum(ends - 1, 0)] == 13)
    nonblank = np.flatnonzero((length - cr) > 0) + 1
    body = nonblank[1:]
    if len(body) != n_rows:  # quoted newlines: fall back to the row count
        return np.arange(n_rows, dtype=np.int64) + 2
    return body.astype(np.int64)


def _parse_time(path: str, col: str, text: Any, lines: np.ndarray, time_unit: str | None) -> np.ndarray:
    import pandas as pd

    s = text if isinstance(text, pd.Series) else pd.Series(text, dtype=object)
    text = s.to_numpy(dtype=object)
    if s.dtype.kind in "iuf":
        num = s.to_numpy(dtype=np.float64)
    elif len(s) and _looks_numeric(str(s.iloc[0])):
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
    else:  # text timestamps (the usual case): no numeric pass over them
        num = np.full(len(s), np.nan)
    if len(num) and np.isfinite(num).all():
        if time_unit is None:
            med = float(np.median(np.abs(num)))
            time_unit = "ns" if med > 1e17 else "us" if med > 1e14 else "ms" if med > 1e11 else "s"
        if time_unit not in _UNIT_SCALE:
            raise TelemetryError(f"{path}: time_unit must be one of {', '.join(_UNIT_SCALE)}, not {time_unit!r}")
        return num * _UNIT_SCALE[time_unit]
    if time_unit is not None and np.isfinite(num).any():
        bad = int(np.flatnonzero(~np.isfinite(num))[0])
        raise TelemetryError(f"{path}: line {lines[bad]}: column {col!r}: {text[bad]!r} is not a number of {time_unit}")
    dt = pd.to_datetime(s, format="ISO8601", utc=True, errors="coerce")
    bad = dt.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TelemetryError(f"{path}: line {lines[i]}: column {col!r}: cannot parse timestamp {str(text[i])[:60]!r} "
                             f"({int(bad.sum())} unparsable; expected ISO 8601 like 2020-03-09 10:14:33, or epoch seconds/ms)")
    return dt.to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric(text: Any) -> tuple[np.ndarray, np.ndarray]:
    """A column (numbers, or strings where the parser met text) → float64 and a problem code per cell."""
    import pandas as pd

    s = text if isinstance(text, pd.Series) else pd.Series(text, dtype=object)
    if s.dtype.kind in "iufb":  # the C parser read every cell as a number; NaN is an empty field
        v = s.to_numpy(dtype=np.float64, copy=True)
        code = np.zeros(len(v), dtype=np.uint8)
        nf = ~np.isfinite(v)
        if nf.any():
            code[nf] = np.where(np.isnan(v[nf]), MISSING, NONFINITE)
            v[nf] = np.nan
        return v, code
    v = np.array(pd.to_numeric(s, errors="coerce"), dtype=np.float64)  # a writable copy
    code = np.zeros(len(v), dtype=np.uint8)
    nf = ~np.isfinite(v)
    if nf.any():
        sub = s[nf]
        st = sub.astype(object).where(sub.notna(), "").astype(str).str.strip().str.lower()
        empty = (st == "").to_numpy()
        literal = st.isin(["nan", "-nan", "+nan"]).to_numpy()
        inf = np.isinf(v[nf])  # 'inf', '-Infinity', or a number beyond float64 (1e999)
        code[nf] = np.where(empty, MISSING, np.where(literal | inf, NONFINITE, TEXT)).astype(np.uint8)
        v[nf] = np.nan
    return v, code


def _choose_time(path: str, names: list[str], time_column: str | None) -> str:
    if time_column is not None:
        if time_column not in names:
            raise TelemetryError(f"{path}: no time column {time_column!r} (columns: {', '.join(map(repr, names))})")
        return time_column
    lower = {n.strip().lower(): n for n in names}
    for cand in TIME_NAMES:
        if cand in lower:
            return lower[cand]
    return names[0]


def read_csv(path: str | os.PathLike[str], *, sep: str | None = None, time_column: str | None = None, time_unit: str | None = None,
             columns: list[str] | None = None) -> TableData:
    """Read a CSV (``sep`` sniffed from the first lines when not given)."""
    import pandas as pd

    p = str(path)
    try:
        raw = Path(p).read_bytes()
    except OSError as exc:
        raise TelemetryError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if sep is None:
        sep = sniff_separator(p, raw[:65536])
    import io

    try:  # numbers parse in C; a column with any text comes back as strings (fixed up in _numeric)
        df = pd.read_csv(io.BytesIO(raw), sep=sep, engine="c", na_values=[""], keep_default_na=False, low_memory=False,
                         encoding_errors="replace")
    except pd.errors.EmptyDataError:
        raise TelemetryError(f"{p}: empty file (no header line)") from None
    except (pd.errors.ParserError, ValueError) as exc:
        msg = str(exc).strip().replace("Error tokenizing data. C error: ", "")
        raise TelemetryError(f"{p}: malformed CSV (separator {sep!r}): {msg}") from None
    names = [str(c) for c in df.columns]
    header = raw.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(sep)
    if len(set(header)) != len(header) or any(n.startswith("Unnamed: ") for n in names):
        raise TelemetryError(f"{p}: line 1: header has empty or duplicate column names: {header[:12]}")
    lines = _line_numbers(raw, len(df))
    if len(names) > 1 and len(df) and quote_free(raw):
        short = _short_rows(raw, sep, len(names))
        if short is not None:
            raise TelemetryError(f"{p}: line {short[0]}: malformed row: {short[1]} fields, the header has {len(names)} (separator {sep!r})")
    if len(names) == 1 and any(s in names[0] for s in SEPARATORS if s != sep):
        other = [s for s in SEPARATORS if s != sep and s in names[0]][0]
        raise TelemetryError(f"{p}: line 1: one column {names[0][:60]!r} with separator {sep!r}; this file looks {other!r}-separated")
    tcol = _choose_time(p, names, time_column)
    t = _parse_time(p, tcol, df[tcol], lines, time_unit)
    cols, probs = {}, {}
    for name in columns if columns is not None else [n for n in names if n != tcol]:
        if name not in df.columns:
            continue
        v, code = _numeric(df[name])
        cols[name] = v
        if code.any():
            probs[name] = code
    return TableData(p, t, cols, probs, lines, tcol, "csv")


def quote_free(raw: bytes) -> bool:
    return raw.find(b'"') < 0


def _short_rows(raw: bytes, sep: str, n_fields: int) -> tuple[int, int] | None:
    """First (line, fields) of a data line with fewer fields than the header (pandas pads those silently)."""
    a = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(a == 10)
    if not len(a) or a[-1] != 10:
        ends = np.r_[ends, len(a)]
    starts = np.r_[0, ends[:-1] + 1]
    seps = np.flatnonzero(a == ord(sep))
    per_line = np.searchsorted(seps, ends) - np.searchsorted(seps, starts)
    length = ends - starts
    blank = length - ((length > 0) & (a[np.maximum(ends - 1, 0)] == 13)) <= 0
    bad = np.flatnonzero(~blank & (per_line < n_fields - 1))
    bad = bad[bad > 0]
    if not len(bad):
        return None
    i = int(bad[0])
    return i + 1, int(per_line[i]) + 1


def read_parquet(path: str | os.PathLike[str], *, time_column: str | None = None, time_unit: str | None = None,
                 columns: list[str] | None = None) -> TableData:
    """Read a Parquet file (pyarrow, imported here)."""
    p = str(path)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a declared dependency
        raise TelemetryError(f"{p}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        tab = pq.read_table(p)
    except (OSError, pa.ArrowException) as exc:
        raise TelemetryError(f"{p}: cannot read Parquet: {exc}") from None
    names = [str(n) for n in tab.column_names]
    if not names:
        raise TelemetryError(f"{p}: Parquet file has no columns")
    tcol = _choose_time(p, names, time_column)
    lines = np.arange(1, tab.num_rows + 1, dtype=np.int64)
    tc = tab.column(tcol)
    if pa.types.is_timestamp(tc.type) or pa.types.is_date(tc.type):
        if tc.null_count:
            i = int(np.flatnonzero(tc.is_null().to_numpy(zero_copy_only=False))[0])
            raise TelemetryError(f"{p}: row {i + 1}: column {tcol!r}: missing timestamp")
        t = tc.cast(pa.timestamp("ns", tz="UTC") if pa.types.is_timestamp(tc.type) else pa.timestamp("ns")).cast(pa.int64()).to_numpy(zero_copy_only=False) / 1e9
    else:
        t = _parse_time(p, tcol, np.asarray(tc.to_pylist(), dtype=object), lines, time_unit)
    cols, probs = {}, {}
    for name in columns if columns is not None else [n for n in names if n != tcol]:
        if name not in names:
            continue
        c = tab.column(name)
        if pa.types.is_integer(c.type) or pa.types.is_floating(c.type) or pa.types.is_boolean(c.type):
            v = c.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
            code = np.where(c.is_null().to_numpy(zero_copy_only=False), MISSING, np.where(np.isfinite(v), OK, NONFINITE)).astype(np.uint8)
            v[code != OK] = np.nan
        else:
            v, code = _numeric(np.asarray(["" if x is None else str(x) for x in c.to_pylist()], dtype=object))
        cols[name] = v
        if code.any():
            probs[name] = code
    return TableData(p, t, cols, probs, lines, tcol, "parquet")


def read_table(path: str | os.PathLike[str], *, fmt: str | None = None, **kwargs: object) -> TableData:
    """CSV or Parquet by ``fmt`` or the file's extension (``.parquet``/``.pq`` → Parquet)."""
    fmt = fmt or ("parquet" if str(path).lower().endswith((".parquet", ".pq")) else "csv")
    if fmt == "parquet":
        kwargs.pop("sep", None)
        return read_parquet(path, **kwargs)  # type: ignore[arg-type]
    if fmt != "csv":
        raise TelemetryError(f"{path}: unknown table format {fmt!r} (csv or parquet)")
    return read_csv(path, **kwargs)  # type: ignore[arg-type]
