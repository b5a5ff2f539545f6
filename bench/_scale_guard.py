"""A memory guard for the phases of ``bench/scale.py`` (its child processes).

A watcher *process* (this file run as a script) reads the machine's ``MemAvailable``
(``/proc/meminfo``) and the guarded process's RSS every ``interval`` s and keeps each
phase's peak RSS. When available memory falls below ``min_free_gb`` it kills the
guarded process and prints one JSON line on its behalf (the same stdout): the results
of the phases done so far plus ``broke: "memory during <phase>"`` with the RSS and the
available memory at that moment. A run too big for the machine stops before it pushes
other work into swap or the OOM killer, and says which phase broke first.

A process, not a thread: USD's C++ calls (``Usd.Stage.Open``, ``Sdf.Layer.Save``, …)
hold the GIL for minutes at 1M assets, and a watchdog thread would not run during them.
The guarded process tells the watcher its phase and results through a small JSON file
(rewritten atomically at each phase); the watcher hands the peaks back the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def status_mb(pid: int | str = "self") -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Guard:
    """``with Guard(3.0) as g: g.phase("open"); ...; g.result["open_s"] = ...; g.finish()``.

    A process that the watcher stopped exits by SIGKILL (status -9 to its parent); its JSON
    line says ``broke``.

    ``floor_mb`` may be changed between phases (it goes to the watcher with the next phase)."""

    def __init__(self, min_free_gb: float, interval: float = 0.5, phase: str = "start"):
        if min_free_gb < 0:
            raise ValueError(f"min_free_gb must be >= 0, got {min_free_gb}")
        self.floor_mb = min_free_gb * 1024
        self.interval = interval
        self.result: dict[str, Any] = {}
        self.current = phase
        self._own: dict[str, float] = {}  # RSS at each phase's start and end (a phase shorter than the interval has no sample)
        self._dir = Path(tempfile.mkdtemp(prefix="scale-guard-"))
        self._state, self._peaks = self._dir / "state.json", self._dir / "peaks.json"
        self._watcher: subprocess.Popen | None = None

    def __enter__(self) -> "Guard":
        self._publish()
        self._watcher = subprocess.Popen([sys.executable, __file__, str(os.getpid()), str(self._dir), str(self.floor_mb), str(self.interval)])
        while not self._peaks.exists() and self._watcher.poll() is None:  # its first check has run
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop()
        for p in (self._state, self._peaks):
            p.unlink(missing_ok=True)
        self._dir.rmdir()

    def _stop(self) -> dict:
        if self._watcher is not None and self._watcher.poll() is None:
            self._watcher.send_signal(signal.SIGTERM)  # it samples once more and writes the peaks
            self._watcher.wait(30)
        return _read(self._peaks) or {}

    def _publish(self) -> None:
        _write(self._state, {"phase": self.current, "result": self.result, "floor_mb": self.floor_mb})

    def phase(self, name: str) -> None:
        """Start phase ``name`` (the results set so far go to the watcher with it)."""
        rss = status_mb()["VmRSS"]
        self._own[self.current] = max(self._own.get(self.current, 0.0), rss)
        self.current = name
        self._own[name] = max(self._own.get(name, 0.0), rss)
        self._publish()

    def finish(self) -> None:
        """Stop the watcher and print the results (one JSON line)."""
        self.phase(self.current)
        peaks = self._stop()
        merged = dict(self._own)
        for k, v in peaks.get("peaks", {}).items():
            merged[k] = max(merged.get(k, 0.0), v)
        s = status_mb()
        print(json.dumps(dict(self.result, phase_peak_rss_mb=merged, peak_rss_mb=s["VmHWM"], rss_end_mb=s["VmRSS"],
                              min_mem_available_mb=peaks.get("min_available_mb"))), flush=True)


def _watch(pid: int, folder: Path, floor_mb: float, interval: float) -> int:
    state, peaks_path = folder / "state.json", folder / "peaks.json"
    peaks: dict[str, float] = {}
    low = [float("inf")]
    last: dict = {"phase": "start", "result": {}}
    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))

    def sample() -> bool:
        nonlocal last
        last = _read(state) or last
        if os.getppid() != pid:  # the guarded process is gone (this one was re-parented; a zombie still has a /proc entry)
            return False
        try:
            st = status_mb(pid)
        except OSError:
            return False
        rss, avail = st.get("VmRSS", 0.0), mem_available_mb()
        floor = last.get("floor_mb", floor_mb)
        peaks[last["phase"]] = max(peaks.get(last["phase"], 0.0), rss)
        low[0] = min(low[0], avail)
        _write(peaks_path, {"peaks": peaks, "min_available_mb": low[0]})
        if avail < floor and not stopping:
            os.kill(pid, signal.SIGKILL)
            out = dict(last["result"], broke=f"memory during {last['phase']}", broke_phase=last["phase"], broke_rss_mb=rss,
                       broke_mem_available_mb=avail, min_free_mb=floor, phase_peak_rss_mb=peaks, peak_rss_mb=st.get("VmHWM"))
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
            return False
        return True

    while not stopping:
        if not sample():  # broke, or the guarded process died: nobody else removes the folder
            for f in (state, peaks_path, state.with_suffix(".tmp"), peaks_path.with_suffix(".tmp")):
                f.unlink(missing_ok=True)
            folder.rmdir()
            return 0
        time.sleep(interval)
    sample()  # the last phase's peak, for finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(_watch(int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
