"""A small glTF 2.0 binary (GLB) builder in numpy: buffers, accessors, meshes, materials, nodes.

Written against the spec (https://registry.khronos.org/glTF/specs/2.0/glTF-2.0.html) and
checked by the Khronos validator in the tests: one binary buffer, 4-byte aligned views,
``min``/``max`` on positions and animation inputs, vertex attributes in their own views.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
FLOAT = 5126
UNSIGNED_SHORT = 5123
UNSIGNED_INT = 5125
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}


class GltfBuilder:
    def __init__(self, generator: str):
        self.doc: dict[str, Any] = {"asset": {"version": "2.0", "generator": generator}, "scene": 0, "scenes": [{"nodes": []}],
                                    "nodes": [], "meshes": [], "materials": [], "accessors": [], "bufferViews": [],
                                    "buffers": [{"byteLength": 0}]}
        self._chunks: list[bytes] = []
        self._offset = 0
        self._materials: dict[tuple, int] = {}

    # -- binary data ---------------------------------------------------------------
    def _view(self, data: bytes, target: int | None) -> int:
        pad = (-self._offset) % 4
        if pad:
            self._chunks.append(b"\0" * pad)
            self._offset += pad
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self._offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self._chunks.append(data)
        self._offset += len(data)
        self.doc["bufferViews"].append(view)
        return len(self.doc["bufferViews"]) - 1

    def accessor(self, array: np.ndarray, *, target: int | None = ARRAY_BUFFER, minmax: bool = False,
                 component: int = FLOAT, normalized: bool = False) -> int:
        arr = np.ascontiguousarray(array)
        width = 1 if arr.ndim == 1 else arr.shape[1]
        dtype = {FLOAT: np.float32, UNSIGNED_INT: np.uint32, UNSIGNED_SHORT: np.uint16}[component]
        arr = arr.astype(dtype, copy=False)
        acc: dict[str, Any] = {"bufferView": self._view(arr.tobytes(), target), "componentType": component,
                               "count": int(len(arr)), "type": _TYPES[width]}
        if normalized:
            acc["normalized"] = True
        if minmax and len(arr):
            a2 = arr.reshape(len(arr), width)
            if component == FLOAT:
                acc["min"] = [float(x) for x in a2.min(axis=0)]
                acc["max"] = [float(x) for x in a2.max(axis=0)]
            else:
                acc["min"] = [int(x) for x in a2.min(axis=0)]
                acc["max"] = [int(x) for x in a2.max(axis=0)]
        self.doc["accessors"].append(acc)
        return len(self.doc["accessors"]) - 1

    # -- scene objects -------------------------------------------------------------
    def material(self, base: tuple[float, float, float, float], *, double_sided: bool, blend: bool,
                 metallic: float = 0.0, roughness: float = 0.7) -> int:
        key = (tuple(round(float(c), 5) for c in base), double_sided, blend, round(metallic, 5), round(roughness, 5))
        if key in self._materials:
            return self._materials[key]
        mat: dict[str, Any] = {"name": f"twinstage_{len(self._materials)}",
                               "pbrMetallicRoughness": {"baseColorFactor": [float(np.clip(c, 0, 1)) for c in base],
                                                        "metallicFactor": float(metallic), "roughnessFactor": float(roughness)}}
        if double_sided:
            mat["doubleSided"] = True
        if blend:
            mat["alphaMode"] = "BLEND"
        self.doc["materials"].append(mat)
        self._materials[key] = len(self.doc["materials"]) - 1
        return self._materials[key]

    def primitive(self, positions: np.ndarray, normals: np.ndarray, triangles: np.ndarray, material: int,
                  colors: np.ndarray | None = None) -> dict[str, Any]:
        attrs = {"POSITION": self.accessor(positions, minmax=True), "NORMAL": self.accessor(normals)}
        if colors is not None:
            attrs["COLOR_0"] = self.accessor(colors)
        n = len(positions)
        comp = UNSIGNED_SHORT if n < 65535 else UNSIGNED_INT
        idx = self.accessor(np.asarray(triangles).reshape(-1), target=ELEMENT_ARRAY_BUFFER, component=comp)
        return {"attributes": attrs, "indices": idx, "material": material, "mode": 4}

    def mesh(self, name: str, primitives: list[dict[str, Any]]) -> int:
        self.doc["meshes"].append({"name": name, "primitives": primitives})
        return len(self.doc["meshes"]) - 1

    def node(self, node: dict[str, Any], parent: int | None) -> int:
        self.doc["nodes"].append(node)
        i = len(self.doc["nodes"]) - 1
        if parent is None:
            self.doc["scenes"][0]["nodes"].append(i)
        else:
            self.doc["nodes"][parent].setdefault("children", []).append(i)
        return i

    # -- output --------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        doc = {k: v for k, v in self.doc.items() if v != []}
        binary = b"".join(self._chunks)
        binary += b"\0" * ((-len(binary)) % 4)
        if binary:
            doc["buffers"] = [{"byteLength": len(binary)}]
        else:
            doc.pop("buffers", None)
            doc.pop("bufferViews", None)
        text = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
        text += b" " * ((-len(text)) % 4)
        chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
        if binary:
            chunks += struct.pack("<II", len(binary), 0x004E4942) + binary
        return struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks


def matrix_to_gltf(m: np.ndarray) -> list[float]:
    """A USD row-vector 4×4 as glTF's column-major column-vector matrix (the same 16 numbers, row by row)."""
    return [float(x) for x in np.asarray(m, dtype=np.float64).reshape(-1)]


def decompose(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Row-vector matrix → (translation, rotation quaternion xyzw, scale, residual of the reconstruction)."""
    m = np.asarray(m, dtype=np.float64)
    t = m[3, :3].copy()
    lin = m[:3, :3].T  # column-vector linear part
    s = np.linalg.norm(lin, axis=0)
    s = np.where(s > 1e-300, s, 1.0)
    if np.linalg.det(lin) < 0:
        s[0] = -s[0]
    r = lin / s
    q = _quat(r)
    residual = float(np.abs(r @ r.T - np.eye(3)).max())
    return t, q, s, residual


def _quat(r: np.ndarray) -> np.ndarray:
    """Rotation matrix (column-vector) → unit quaternion (x, y, z, w)."""
    tr = np.trace(r)
    if tr > 0:
        k = np.sqrt(tr + 1.0) * 2
        q = [(r[2, 1] - r[1, 2]) / k, (r[0, 2] - r[2, 0]) / k, (r[1, 0] - r[0, 1]) / k, 0.25 * k]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        k = np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
        q = [0.25 * k, (r[0, 1] + r[1, 0]) / k, (r[0, 2] + r[2, 0]) / k, (r[2, 1] - r[1, 2]) / k]
    elif r[1, 1] > r[2, 2]:
        k = np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
        q = [(r[0, 1] + r[1, 0]) / k, 0.25 * k, (r[1, 2] + r[2, 1]) / k, (r[0, 2] - r[2, 0]) / k]
    else:
        k = np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
        q = [(r[0, 2] + r[2, 0]) / k, (r[1, 2] + r[2, 1]) / k, 0.25 * k, (r[1, 0] - r[0, 1]) / k]
    q = np.asarray(q)
    return q / np.linalg.norm(q)
