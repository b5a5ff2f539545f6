"""Shared fixtures. Real data lives in ../shared/data beside the project root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from _testdata import DATA_SKIP, REQUIRE_DATA, ROOT, SHARED_DATA  # noqa: F401  (one definition, importable by test modules)


@pytest.fixture(scope="session", autouse=True)
def _read_cache(tmp_path_factory: pytest.TempPathFactory):
    """Twin opens cache what they read per layer content hash; tests keep that cache in their own tmp dir."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TWINSTAGE_READ_CACHE", str(tmp_path_factory.mktemp("read-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (SKAB CSVs, usd-wg assets). Missing: the test is skipped (one summary line),
    or fails where TWINSTAGE_REQUIRE_DATA=1 (CI), so CI can never pass without running them."""
    if not SHARED_DATA.is_dir():
        if REQUIRE_DATA:
            pytest.fail(f"real data not found at {SHARED_DATA} and TWINSTAGE_REQUIRE_DATA is set: see docs/data.md", pytrace=False)
        pytest.skip(DATA_SKIP)
    return SHARED_DATA


#: the one location every real-data skip reports (a skip mark at collection has no traceback of its own)
_SKIP_LINE = next(i for i, ln in enumerate(Path(__file__).read_text().splitlines()) if "pytest.skip(DATA_SKIP)" in ln) + 1


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """All real-data skips share one location, so ``-ra`` folds them into ONE summary line."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and report.longrepr[2].endswith(DATA_SKIP):
        report.longrepr = (str(Path(__file__).relative_to(ROOT)), _SKIP_LINE, DATA_SKIP)
    return report


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
