"""NVIDIA's omniverse-asset-validator, run as its users run it (a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def asset_validator(path: Path) -> tuple[int, str]:
    """Run NVIDIA's omniverse-asset-validator on a file: (number of ERROR lines, output)."""
    proc = subprocess.run([sys.executable, "-m", "omni.asset_validator", str(path)], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    errors = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    return len(errors), out
