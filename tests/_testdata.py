"""Where the real data is, for conftest.py and for test modules that parametrise over it at import time."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: TWINSTAGE_DATA (TWINSTAGE_SHARED_DATA, its older name, still works), else ../shared/data beside the checkout
SHARED_DATA = Path(os.environ.get("TWINSTAGE_DATA") or os.environ.get("TWINSTAGE_SHARED_DATA") or ROOT.parent / "shared" / "data")
#: set (CI does) to make a missing data folder a failure instead of a skip
REQUIRE_DATA = os.environ.get("TWINSTAGE_REQUIRE_DATA", "").strip().lower() not in ("", "0", "false", "no")
DATA_SKIP = "real-data tests skipped: set TWINSTAGE_DATA or place the data at ../shared/data; see docs/data.md"
