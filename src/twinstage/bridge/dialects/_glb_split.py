"""Split the scene's GLB into one small GLB per twin asset plus one for the scenery, for
Foxglove's ``ModelPrimitive`` (one model per entity, placed in the asset's frame).

Every part keeps the root's axis conversion (glTF Y-up metres), so a part shows in Foxglove
exactly as the whole scene would; an asset's own translation is dropped (its frame carries it),
the scenery keeps its place. Only what the parts reference is copied: meshes, accessors,
buffer views (realigned), materials, textures, images and samplers.
"""

from __future__ import annotations

import json
import struct
from typing import Any

_CHUNK = struct.Struct("<I4s")


def read_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < 20:
        raise ValueError(f"not a GLB version 2 file ({len(data)} bytes)")
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2 or length > len(data):
        raise ValueError("not a GLB version 2 file")
    n, kind = _CHUNK.unpack_from(data, 12)
    if kind != b"JSON" or 20 + n > length:
        raise ValueError("GLB: the first chunk is not a JSON chunk inside the file")
    try:
        doc = json.loads(data[20:20 + n])
    except UnicodeDecodeError as exc:
        raise ValueError(f"GLB: JSON chunk is not UTF-8 ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError("GLB: the JSON chunk is not an object")
    off = 20 + n
    binary = b""
    if off + 8 <= length:
        m, kind = _CHUNK.unpack_from(data, off)
        if kind == b"BIN\x00":
            binary = data[off + 8:off + 8 + m]
    return doc, binary


def write_glb(doc: dict[str, Any], binary: bytes) -> bytes:
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    binary += b"\x00" * (-len(binary) % 4)
    chunks = _CHUNK.pack(len(js), b"JSON") + js + (_CHUNK.pack(len(binary), b"BIN\x00") + binary if binary else b"")
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


class _Subset:
    def __init__(self, doc: dict[str, Any], binary: bytes):
        self.src, self.bin = doc, binary
        self.out: dict[str, Any] = {"asset": doc.get("asset", {"version": "2.0"}), "scene": 0, "scenes": [{"nodes": [0]}], "nodes": []}
        self.blob = bytearray()
        self.maps: dict[str, dict[int, int]] = {}

    def _take(self, kind: str, i: int, fix: Any = None) -> int:
        m = self.maps.setdefault(kind, {})
        if i not in m:
            item = json.loads(json.dumps(self.src[kind][i]))
            if fix is not None:
                fix(item)
            self.out.setdefault(kind, []).append(item)
            m[i] = len(self.out[kind]) - 1
        return m[i]

    def _view(self, i: int) -> int:
        def fix(v: dict[str, Any]) -> None:
            start = v.get("byteOffset", 0)
            self.blob += b"\x00" * (-len(self.blob) % 4)
            v["buffer"], v["byteOffset"] = 0, len(self.blob)
            self.blob += self.bin[start:start + v["byteLength"]]
        return self._take("bufferViews", i, fix)

    def _accessor(self, i: int) -> int:
        def fix(a: dict[str, Any]) -> None:
            if "bufferView" in a:
                a["bufferView"] = self._view(a["bufferView"])
            sparse = a.get("sparse")
            if sparse:
                sparse["indices"]["bufferView"] = self._view(sparse["indices"]["bufferView"])
                sparse["values"]["bufferView"] = self._view(sparse["values"]["bufferView"])
        return self._take("accessors", i, fix)

    def _texture(self, i: int) -> int:
        def fix(t: dict[str, Any]) -> None:
            if "sampler" in t:
                t["sampler"] = self._take("samplers", t["sampler"])
            if "source" in t:
                t["source"] = self._take("images", t["source"], lambda im: im.__setitem__("bufferView", self._view(im["bufferView"]))
                                         if "bufferView" in im else None)
        return self._take("textures", i, fix)

    def _material(self, i: int) -> int:
        def fix(m: dict[str, Any]) -> None:
            def walk(o: Any) -> None:
                if isinstance(o, dict):
                    for k, v in o.items():
                        if k.endswith("Texture") and isinstance(v, dict) and "index" in v:
                            v["index"] = self._texture(v["index"])
                        else:
                            walk(v)
            walk(m)
        return self._take("materials", i, fix)

    def _mesh(self, i: int) -> int:
        def fix(mesh: dict[str, Any]) -> None:
            for p in mesh["primitives"]:
                p["attributes"] = {k: self._accessor(a) for k, a in p["attributes"].items()}
                if "indices" in p:
                    p["indices"] = self._accessor(p["indices"])
                if "material" in p:
                    p["material"] = self._material(p["material"])
                if "targets" in p:
                    p["targets"] = [{k: self._accessor(a) for k, a in t.items()} for t in p["targets"]]
        return self._take("meshes", i, fix)

    def node(self, i: int, drop_translation: bool = False) -> int:
        n = {k: v for k, v in self.src["nodes"][i].items() if k not in ("children", "skin", "camera")}
        if drop_translation:
            n.pop("translation", None)
            if "matrix" in n:
                n["matrix"] = n["matrix"][:12] + [0.0, 0.0, 0.0, 1.0]
        if "mesh" in n:
            n["mesh"] = self._mesh(n["mesh"])
        self.out["nodes"].append(n)
        k = len(self.out["nodes"]) - 1
        kids = [self.node(c) for c in self.src["nodes"][i].get("children", [])]
        if kids:
            n["children"] = kids
        return k

    def glb(self, root: dict[str, Any], children: list[tuple[int, bool]]) -> bytes:
        self.out["nodes"].append({k: v for k, v in root.items() if k != "children"})
        kids = [self.node(i, drop) for i, drop in children]
        if kids:
            self.out["nodes"][0]["children"] = kids
        if self.blob:
            self.out["buffers"] = [{"byteLength": len(self.blob)}]
        return write_glb(self.out, bytes(self.blob))


def split_glb(data: bytes, twin_ids: set[str]) -> tuple[bytes | None, dict[str, bytes]]:
    """(the scenery's GLB or None, {twinId: the asset's GLB}) of a GLB whose first scene has one
    root node over the twin nodes (what :func:`twinstage.export.to_glb` writes). ValueError for
    anything else."""
    try:
        return _split(data, twin_ids)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ValueError(f"GLB: malformed glTF document ({type(exc).__name__}: {exc})") from None


def _split(data: bytes, twin_ids: set[str]) -> tuple[bytes | None, dict[str, bytes]]:
    doc, binary = read_glb(data)
    scene = doc.get("scenes", [{}])[doc.get("scene", 0)]
    roots = scene.get("nodes", [])
    if len(roots) != 1:
        raise ValueError(f"GLB: expected one root node, found {len(roots)}")
    root = doc["nodes"][roots[0]]
    parts: dict[str, bytes] = {}
    scenery: list[tuple[int, bool]] = []
    for c in root.get("children", []):
        tid = doc["nodes"][c].get("extras", {}).get("twinId")
        if tid in twin_ids and tid not in parts:
            parts[tid] = _Subset(doc, binary).glb(root, [(c, True)])
        else:
            scenery.append((c, False))
    return (_Subset(doc, binary).glb(root, scenery) if scenery else None), parts
