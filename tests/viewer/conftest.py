"""Viewer tests render offscreen on Mesa's lavapipe (software Vulkan): no GPU needed.

The environment is set before wgpu is imported: wgpu's OpenGL path on llvmpipe lacks
features pygfx needs, so Vulkan is forced, on the lavapipe ICD when it is installed
(Debian: mesa-vulkan-drivers).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LAVAPIPE = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json"
os.environ.setdefault("WGPU_BACKEND_TYPE", "Vulkan")
if Path(LAVAPIPE).exists():
    os.environ.setdefault("VK_ICD_FILENAMES", LAVAPIPE)
os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
os.environ.setdefault("PYGLFW_LIBRARY_VARIANT", "x11")


@pytest.fixture(scope="session")
def gpu() -> dict:
    """The wgpu adapter (lavapipe here). Fails loudly when there is none: these tests are meant to run."""
    from twinstage.viewer import ViewerUnavailable
    from twinstage.viewer._env import adapter_info

    try:
        return adapter_info()
    except ViewerUnavailable as exc:
        pytest.fail(f"no wgpu adapter: {exc} (install mesa-vulkan-drivers)")


@pytest.fixture(scope="session")
def usd_wg(shared_data: Path) -> Path:
    d = shared_data / "usd-wg"
    if not d.is_dir():
        pytest.fail(f"{d} missing")
    return d
