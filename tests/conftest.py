"""Shared fixtures. Real data lives in ../shared/data beside the project root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TWINSTAGE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (SKAB CSVs, usd-wg assets). Tests that need it fail loudly if it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA} (set TWINSTAGE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def _pump_scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from twinstage.scenes import build_pump_testbed

    d = tmp_path_factory.mktemp("pump")
    build_pump_testbed(d / "pump_testbed.usda")
    return d


@pytest.fixture
def pump_scene(_pump_scene_dir: Path, tmp_path: Path) -> Path:
    """A fresh copy of the pump testbed scene (+ its parts file) in tmp_path."""
    for f in _pump_scene_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / "pump_testbed.usda"


@pytest.fixture(scope="session")
def factory_1k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1000 machines + 200 conveyor items (read-only: copy before editing)."""
    from twinstage.scenes import generate_factory

    p = tmp_path_factory.mktemp("factory") / "factory_1k.usdc"
    generate_factory(1000, p, items=200)
    return p
