"""Fixtures of the export tests: the Khronos glTF validator (npm, run with the machine's node),
NVIDIA's asset validator and OpenUSD's UsdValidation, and small scenes built here."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).with_name("node")


def _install_gltf_validator() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed for the Khronos glTF validator (Debian: nodejs npm)")
    if not (NODE_DIR / "node_modules" / "gltf-validator").is_dir():
        cmd = [npm, "ci" if (NODE_DIR / "package-lock.json").exists() else "install", "--no-audit", "--no-fund", "--silent"]
        r = subprocess.run(cmd, cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
        if r.returncode:
            pytest.fail(f"installing npm gltf-validator failed in {NODE_DIR}: {r.stdout}{r.stderr}")
    return node


@pytest.fixture(scope="session")
def gltf_validate():
    """``gltf_validate(*paths)`` → list of Khronos validator reports (dicts), one per file."""
    node = _install_gltf_validator()

    def run(*paths: Path) -> list[dict]:
        r = subprocess.run([node, str(NODE_DIR / "validate.mjs"), *map(str, paths)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    return run


@pytest.fixture
def usd_checks():
    """``usd_checks(path)`` → (NVIDIA ERROR lines, UsdValidation/twin error findings) for an exported file."""
    from usd_validators import asset_validator

    from twinstage.usd._validate import validate

    def run(path: Path) -> tuple[list[str], list[str]]:
        _, out = asset_validator(path)
        nv = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
        ours = [str(f) for f in validate(path) if f.severity == "error"]
        return nv, ours

    return run
