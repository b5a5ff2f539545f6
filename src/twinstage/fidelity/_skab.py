"""Reader for SKAB CSV files (``;``-separated, 1 Hz; see ``shared/data/README.md``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._detect import DetectorError

#: SKAB telemetry columns, in file order
SKAB_CHANNELS = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)


def read_skab(path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(values (rows × 8), anomaly labels (rows,) or zeros, channel names)`` of one SKAB CSV.

    Raises :class:`DetectorError` naming the file, line and column of anything malformed.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\r\n").split(";")
        missing = [c for c in SKAB_CHANNELS if c not in header]
        if missing:
            raise DetectorError(f"{path}:1: missing SKAB column(s) {missing}")
        cols = [header.index(c) for c in SKAB_CHANNELS]
        lab = header.index("anomaly") if "anomaly" in header else None
        values, labels = [], []
        for lineno, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            cells = line.rstrip("\r\n").split(";")
            if len(cells) != len(header):
                raise DetectorError(f"{path}:{lineno}: {len(cells)} fields, header has {len(header)}")
            try:
                values.append([float(cells[j]) for j in cols])
                labels.append(float(cells[lab]) if lab is not None else 0.0)
            except ValueError:
                bad = next(j for j in cols + ([lab] if lab is not None else []) if not _isfloat(cells[j]))
                raise DetectorError(f"{path}:{lineno}: column {header[bad]!r}: not a number: {cells[bad]!r}") from None
    if not values:
        raise DetectorError(f"{path}: no data rows")
    return np.array(values), (np.array(labels) > 0.5).astype(np.int8), SKAB_CHANNELS


def _isfloat(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
