"""Colours and opacity of gprims: bound UsdPreviewSurface, textures (mean colour), displayColor.

Decisions: a bound ``UsdPreviewSurface`` colour wins over ``displayColor`` (as in Hydra
Storm); a texture feeding ``diffuseColor`` contributes its mean colour; opacity comes
from the surface's ``opacity`` input (a texture: its mean alpha), else
``primvars:displayOpacity``; ``opacityThreshold`` > 0 marks a cut-out (alpha mask).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from pxr import Sdf, Usd, UsdShade

log = logging.getLogger("twinstage.geometry")

class _Colors:
    """Resolves a gprim's colour: bound UsdPreviewSurface, else displayColor, else grey."""

    def __init__(self, time: Usd.TimeCode):
        self.time = time
        self._material_cache: dict[str, tuple[float, float, float] | None] = {}
        self._texture_cache: dict[str, tuple[float, float, float] | None] = {}
        self._opacity_cache: dict[str, float | None] = {}
        self._alpha_cache: dict[str, float | None] = {}
        self._pbr_cache: dict[str, tuple[float, float] | None] = {}

    def material_opacity(self, material: UsdShade.Material | None) -> float | None:
        """Opacity of a material's surface (``opacity`` input: a value, or a texture's mean alpha); None if unset.

        A cut-out (``opacityThreshold`` > 0) is approximated by its mean opacity, drawn blended.
        """
        if material is None or not material.GetPrim():
            return None
        key = str(material.GetPath())
        if key in self._opacity_cache:
            return self._opacity_cache[key]
        op = None
        try:
            shader, _, _ = material.ComputeSurfaceSource()
            inp = shader.GetInput("opacity") if shader and shader.GetPrim() else None
            if inp:
                for attr in inp.GetValueProducingAttributes():
                    if UsdShade.Input.IsInput(attr):
                        v = attr.Get(self.time)
                        op = float(v) if v is not None else None
                    else:
                        owner = UsdShade.Shader(attr.GetPrim())
                        if owner and (owner.GetShaderId() or "") == "UsdUVTexture":
                            op = self._texture_alpha(owner)
                    break
                if op is None and inp.Get(self.time) is not None:
                    op = float(inp.Get(self.time))
        except Exception as exc:  # a broken network must not stop the scene
            log.debug("material %s opacity: %s", key, exc)
        if op is not None and not math.isfinite(op):
            op = None
        op = None if op is None else min(1.0, max(0.0, op))
        self._opacity_cache[key] = op
        return op

    def material_pbr(self, material: UsdShade.Material | None) -> tuple[float, float] | None:
        """(metallic, roughness) of a material's UsdPreviewSurface when either is authored as a value; else None.

        UsdPreviewSurface's defaults are metallic 0, roughness 0.5; a texture-driven input counts as its default."""
        if material is None or not material.GetPrim():
            return None
        key = str(material.GetPath())
        if key in self._pbr_cache:
            return self._pbr_cache[key]
        out = None
        try:
            shader, _, _ = material.ComputeSurfaceSource()
            if shader and shader.GetPrim() and (shader.GetShaderId() or "") == "UsdPreviewSurface":
                vals = []
                authored = False
                for name, default in (("metallic", 0.0), ("roughness", 0.5)):
                    inp = shader.GetInput(name)
                    v = None
                    if inp:
                        for attr in inp.GetValueProducingAttributes():
                            if UsdShade.Input.IsInput(attr):
                                v = attr.Get(self.time)
                            break
                    if v is not None and math.isfinite(float(v)):
                        authored = True
                        vals.append(min(1.0, max(0.0, float(v))))
                    else:
                        vals.append(default)
                out = (vals[0], vals[1]) if authored else None
        except Exception as exc:  # a broken network must not stop the scene
            log.debug("material %s pbr: %s", key, exc)
        self._pbr_cache[key] = out
        return out

    def _texture_alpha(self, tex: UsdShade.Shader) -> float | None:
        f = tex.GetInput("file")
        asset = f.Get(self.time) if f else None
        resolved = asset.resolvedPath if isinstance(asset, Sdf.AssetPath) else ""
        if resolved and resolved not in self._alpha_cache:
            alpha = None
            try:
                data = read_asset_bytes(resolved)
                img = decode_image(data) if data is not None else None
                if img is not None:
                    alpha = float(img[..., 3].mean() / 255.0) if img.shape[-1] == 4 else 1.0
            except Exception as exc:
                log.debug("texture %s unreadable: %s", resolved, exc)
            self._alpha_cache[resolved] = alpha
        alpha = self._alpha_cache.get(resolved) if resolved else None
        if alpha is None:
            fb = tex.GetInput("fallback")
            v = fb.Get() if fb else None
            alpha = float(v[3]) if v is not None and len(v) > 3 else 1.0
        return alpha

    def material_color(self, material: UsdShade.Material | None, prim: Usd.Prim) -> tuple[float, float, float] | None | str:
        """Linear RGB of a material's diffuse colour; ``"displayColor"`` when it reads the primvar; None if unknown."""
        if material is None or not material.GetPrim():
            return None
        key = str(material.GetPath())
        if key in self._material_cache:
            return self._material_cache[key]
        color = None
        try:
            shader, _, _ = material.ComputeSurfaceSource()
            if shader and shader.GetPrim():
                color = self._shader_color(shader)
        except Exception as exc:  # a broken network must not stop the scene
            log.debug("material %s: %s", key, exc)
        self._material_cache[key] = color
        return color

    def _shader_color(self, shader: UsdShade.Shader):
        for name in ("diffuseColor", "base_color", "diffuse_color_constant", "baseColor"):
            inp = shader.GetInput(name)
            if not inp:
                continue
            for attr in inp.GetValueProducingAttributes():
                owner = UsdShade.Shader(attr.GetPrim())
                if UsdShade.Input.IsInput(attr):
                    v = attr.Get(self.time)
                    if v is not None:
                        return tuple(float(c) for c in v)[:3]
                elif owner:
                    sid = owner.GetShaderId() or ""
                    if sid.startswith("UsdPrimvarReader"):
                        var = owner.GetInput("varname")
                        if var and var.Get() == "displayColor":
                            return "displayColor"
                    if sid == "UsdUVTexture":
                        return self._texture_color(owner)
            # an unconnected input with its own value
            v = inp.Get(self.time)
            if v is not None:
                return tuple(float(c) for c in v)[:3]
        return None

    def _texture_color(self, tex: UsdShade.Shader):
        f = tex.GetInput("file")
        asset = f.Get(self.time) if f else None
        scale = tex.GetInput("scale")
        bias = tex.GetInput("bias")
        sc = np.array(scale.Get(), dtype=float)[:3] if scale and scale.Get() is not None else np.ones(3)
        bi = np.array(bias.Get(), dtype=float)[:3] if bias and bias.Get() is not None else np.zeros(3)
        mean = None
        if isinstance(asset, Sdf.AssetPath):
            mean = self.texture_mean(asset.resolvedPath or "")
        if mean is None:
            fb = tex.GetInput("fallback")
            v = fb.Get() if fb else None
            mean = np.array(v, dtype=float)[:3] if v is not None else np.array([0.5, 0.5, 0.5])
        return tuple(float(c) for c in np.clip(np.asarray(mean) * sc + bi, 0.0, 1.0))

    def texture_mean(self, resolved: str) -> np.ndarray | None:
        """Mean linear RGB of an image (files or packaged ``a.usdz[b.png]`` paths); None if unreadable."""
        if not resolved:
            return None
        if resolved in self._texture_cache:
            return self._texture_cache[resolved]
        out = None
        try:
            data = read_asset_bytes(resolved)
            if data is not None:
                img = decode_image(data)
                if img is not None:
                    rgb = img[..., :3].astype(np.float64) / 255.0
                    out = srgb_to_linear(rgb.reshape(-1, 3)).mean(axis=0)
        except Exception as exc:
            log.debug("texture %s unreadable: %s", resolved, exc)
        self._texture_cache[resolved] = out
        return out


def read_asset_bytes(resolved: str) -> bytes | None:
    """Bytes of a resolved asset path through Ar (works inside .usdz packages)."""
    from pxr import Ar

    asset = Ar.GetResolver().OpenAsset(Ar.ResolvedPath(resolved))
    if asset is None:
        return None
    buf = asset.GetBuffer()
    return bytes(buf) if buf is not None else None


def decode_image(data: bytes, max_side: int = 256) -> np.ndarray | None:
    """Decode PNG/JPEG bytes to uint8 RGB(A), subsampled to at most ``max_side`` pixels a side."""
    try:
        import imageio.v3 as iio
    except ImportError:  # pragma: no cover - imageio is part of the viewer extra
        return None
    img = np.asarray(iio.imread(data))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    step = max(1, int(math.ceil(max(img.shape[:2]) / max_side)))
    img = img[::step, ::step]
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64) / np.iinfo(img.dtype).max if img.dtype.kind in "ui" else img, 0, 1) * 255).astype(np.uint8)
    return img


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)

