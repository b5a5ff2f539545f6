"""Regenerate the twin schema plugin: ``python -m twinstage.usd._genschema``.

Runs OpenUSD's ``usdGenSchema`` on ``schema/schema.usda`` (needs jinja2) and fills
in the plugInfo placeholders for a codeless, resource-only plugin.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

SCHEMA_DIR = Path(__file__).with_name("schema")


def generate(out: Path = SCHEMA_DIR) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pxr.Usd.usdGenSchema", str(SCHEMA_DIR / "schema.usda"), tmp],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        info = (Path(tmp) / "plugInfo.json").read_text()
        for key, value in (
            ("@PLUG_INFO_LIBRARY_PATH@", ""),
            ("@PLUG_INFO_RESOURCE_PATH@", "."),
            ("@PLUG_INFO_ROOT@", "."),
        ):
            info = info.replace(key, value)
        (out / "plugInfo.json").write_text(info)
        (out / "generatedSchema.usda").write_text((Path(tmp) / "generatedSchema.usda").read_text())


if __name__ == "__main__":
    generate()
