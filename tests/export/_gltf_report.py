"""Reading Khronos glTF validator reports (imported by the export tests as ``_gltf_report``)."""

from __future__ import annotations


def gltf_errors(report: dict) -> list[str]:
    """The report's errors (severity 0) as ``CODE pointer: message`` lines."""
    return [f"{m['code']} {m.get('pointer', '')}: {m['message']}" for m in report["issues"]["messages"] if m["severity"] == 0]
