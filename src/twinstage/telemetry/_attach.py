"""Attach sources to a twin from what its scene says (the CLI's ``--replay``/``--mqtt``/``--opcua``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._binding import Binding
from ._source import TelemetryError


def scene_bindings(twin: Any, kind: str) -> list[Binding]:
    """The scene's telemetry bindings of ``kind`` (``TwinBindingAPI``), or [] when it has none."""
    from ..usd._binding import read_bindings

    return read_bindings(twin.stage, kind=kind)


def replay_bindings(twin: Any, path: str | os.PathLike[str], columns: list[str], kind: str) -> list[Binding]:
    """Bindings for a replay file: the scene's ``kind`` bindings whose column is in the file; failing
    those, columns matched to prims by ``twin:assetId`` (see :func:`bindings_by_asset_id`)."""
    from ._replay import bindings_by_asset_id

    have = set(columns)
    bound = [b for b in scene_bindings(twin, kind) if b.key in have]
    if not bound:
        bound = bindings_by_asset_id(twin, columns, kind=kind)
    if not bound:
        raise TelemetryError(f"{path}: no column binds to this scene (columns: {', '.join(map(repr, columns[:12]))}); "
                             f"bind them with `twinstage bind SCENE --map FILE` (docs/telemetry.md)")
    return bound


def attach_replay(twin: Any, path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Add a :class:`ReplaySource` for ``path`` (CSV or Parquet) bound as :func:`replay_bindings` says."""
    from ._replay import ReplaySource

    fmt = "parquet" if str(path).lower().endswith((".parquet", ".pq")) else "csv"
    columns = _columns(path, fmt, kwargs.get("sep"), kwargs.get("time_column"))
    bindings = replay_bindings(twin, path, columns, fmt)
    return twin.add_source(ReplaySource(path, bindings, fmt=fmt, **kwargs))


def _columns(path: Any, fmt: str, sep: str | None, time_column: str | None) -> list[str]:
    """The value columns a file has (its header, less the time column)."""
    from ._replay_io import _choose_time, sniff_separator

    p = str(path)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            names = [str(n) for n in pq.read_schema(p).names]
        else:
            with open(p, "rb") as f:
                head = f.read(65536)
            if head.startswith(b"\xef\xbb\xbf"):
                head = head[3:]
            sep = sep or sniff_separator(p, head)
            names = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(sep)
    except OSError as exc:
        raise TelemetryError(f"{p}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    except Exception as exc:  # pyarrow's errors for a file that is not Parquet
        if isinstance(exc, TelemetryError):
            raise
        raise TelemetryError(f"{p}: cannot read Parquet: {exc}") from None
    if not names or names == [""]:
        raise TelemetryError(f"{p}: empty file (no header line)")
    tcol = _choose_time(p, names, time_column)
    return [n for n in names if n != tcol]


def _live_bindings(twin: Any, kind: str, what: str) -> list[Binding]:
    bindings = scene_bindings(twin, kind)
    if not bindings:
        raise TelemetryError(f"{twin.source}: has no {kind} bindings for {what}; write them with `twinstage bind SCENE --map FILE` (docs/telemetry.md)")
    return bindings


def attach_mqtt(twin: Any, address: str) -> Any:
    """``HOST:PORT`` → an :class:`MqttSource` over the scene's mqtt bindings."""
    from ._mqtt import MqttSource

    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise TelemetryError(f"--mqtt {address!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
    return twin.add_source(MqttSource(host.strip("[]"), int(port), _live_bindings(twin, "mqtt", f"--mqtt {address}")))


def attach_opcua(twin: Any, url: str) -> Any:
    """``opc.tcp://…`` → an :class:`OpcUaSource` over the scene's opcua bindings."""
    from ._opcua import OpcUaSource

    if not url.startswith("opc.tcp://"):
        raise TelemetryError(f"--opcua {url!r}: expected an opc.tcp://HOST:PORT/… URL")
    return twin.add_source(OpcUaSource(url, _live_bindings(twin, "opcua", f"--opcua {url}")))


def summary(twin: Any) -> list[str]:
    """One line per source (counts) and one per fed attribute that ended flagged, with its reason."""
    lines = []
    tel = twin.stats().get("telemetry", {})
    for name, st in tel.get("sources", {}).items():
        lines.append(f"  {name}: {st.get('applied', 0)} samples applied, {st.get('bad', 0)} bad, {st.get('late', 0)} late, "
                     f"{st.get('duplicates', 0)} duplicates, {st.get('overflow', 0)} overflowed")
    ages = twin.freshness()
    for ch, arr in ages.items():
        for row in range(len(arr)):
            if arr[row] != arr[row]:  # NaN: not fed
                continue
            prim = twin.table.prims[int(twin.table.channels[ch].prim_index[row])]
            reason = twin.quality_reason(prim, ch)
            if reason != "good":
                lines.append(f"  {Path(prim).name}.{ch}: {reason}")
    return lines
