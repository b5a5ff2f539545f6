"""A small SKAB-format dataset the project makes itself (no third-party data copied in).

:func:`generate_skab_csv` runs the pump testbed's own models headless through a
scripted experiment, samples the pump once per second, adds seeded sensor noise and
writes SKAB's ``;`` CSV (``datetime;Accelerometer1RMS;…;anomaly;changepoint``). The
demo replays it when the real SKAB files are not there; tests use it as data whose
truth is known.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: SKAB column → (pump attribute, noise standard deviation in the column's unit)
COLUMNS = {
    "Accelerometer1RMS": ("vibration1", 0.004),
    "Accelerometer2RMS": ("vibration2", 0.004),
    "Current": ("current", 0.05),
    "Pressure": ("pressure", 0.02),
    "Temperature": ("motorTemperature", 0.1),
    "Thermocouple": ("fluidTemperature", 0.02),
    "Voltage": ("voltage", 1.5),
    "Volume Flow RateRMS": ("flowRate", 0.5),
}
START = np.datetime64("2020-03-09T10:00:00", "s")


def generate_skab_csv(scene: str | os.PathLike[str], out: str | os.PathLike[str], *, seconds: int = 120,
                      script: Sequence[tuple[float, str, str, Any]] = (), seed: int = 0, pump: str = "/Testbed/Pump") -> Path:
    """Simulate ``seconds`` of the testbed under ``script`` ((sim s, prim, attribute, value) steps)
    and write it as a SKAB CSV to ``out``; same arguments, same bytes."""
    import twinstage

    eng = twinstage.open(scene, headless=True, rate=10.0, seed=seed)
    steps = sorted(script)
    rng = np.random.default_rng(seed)
    rows = []
    changes = set()
    for k in range(int(seconds) + 1):  # row k is the state at sim k s; a step at k s acts from the next tick on
        if k:
            eng.run(ticks=10)
        rows.append([eng.get(pump, attr) for attr, _ in COLUMNS.values()])
        while steps and steps[0][0] <= k:
            _, prim, attr, value = steps.pop(0)
            eng.set(prim, **{attr: value})
            changes.add(k)
    eng.close()
    vals = np.array(rows) + rng.normal(0.0, [sd for _, sd in COLUMNS.values()], size=(len(rows), len(COLUMNS)))
    times = (START + np.arange(len(rows)).astype("timedelta64[s]")).astype(str)
    anomaly = np.zeros(len(rows), dtype=int)
    first = min(changes - {0}, default=None)
    if first is not None:  # like SKAB: the experiment (anything after the first scripted change) is labelled anomalous
        anomaly[first:] = 1
    change = np.isin(np.arange(len(rows)), sorted(changes - {0})).astype(int)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["datetime;" + ";".join(COLUMNS) + ";anomaly;changepoint"]
    lines += [";".join([str(t).replace("T", " ")] + [f"{v:.6g}" for v in r] + [f"{a:.1f}", f"{c:.1f}"])
              for t, r, a, c in zip(times, vals, anomaly, change)]
    out.write_text("\n".join(lines) + "\n")
    return out


def find_skab(data: str | os.PathLike[str] | None = None, experiment: str = "valve1/1.csv") -> Path | None:
    """A SKAB file under ``data`` (or ``$TWINSTAGE_SHARED_DATA``, ``../shared/data`` from the working
    directory or from this checkout), or None."""
    if data is not None:
        roots = [Path(data)]
    else:
        roots = [Path(p) for p in (os.environ.get("TWINSTAGE_SHARED_DATA"),) if p]
        roots += [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[3].parent / "shared" / "data"]
    for root in roots:
        for f in (root / "skab" / "data" / experiment, root / "data" / experiment, root / experiment):
            if f.is_file():
                return f
    return None
