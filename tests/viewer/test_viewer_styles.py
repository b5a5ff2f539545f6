"""What the shared geometry now tells the renderer, checked by pixels: single-sided faces are culled,
translucent ones blended, the camera fits the bounds with a margin and leaves the legend its strip,
and missing references are named instead of a bare "nothing to draw"."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from _scenes import boxes
from pxr import Gf, Usd, UsdGeom

from twinstage.usd import create_stage
from twinstage.viewer import Viewer

pytestmark = pytest.mark.usefixtures("gpu")


def quad_stage(*, double_sided: bool = False, opacity: float | None = None, color=(0.9, 0.1, 0.1)) -> Usd.Stage:
    stage = create_stage(None, root="World", up_axis="Z")
    m = UsdGeom.Mesh.Define(stage, "/World/Card")
    # a 2×2 card in the XZ plane whose front (counter-clockwise) side faces +Y: away from a camera looking along +Y
    m.CreatePointsAttr([(-1, 0, -1), (-1, 0, 1), (1, 0, 1), (1, 0, -1)])
    m.CreateFaceVertexCountsAttr([4])
    m.CreateFaceVertexIndicesAttr([0, 1, 2, 3])
    m.CreateDoubleSidedAttr(double_sided)
    m.CreateDisplayColorPrimvar().Set([color])
    if opacity is not None:
        m.CreateDisplayOpacityPrimvar().Set([opacity])
    return stage


def centre_pixel(stage: Usd.Stage, view_dir=(0.0, 1.0, 0.0)) -> np.ndarray:
    v = Viewer(stage, size=(200, 160), quality="flat", view_dir=view_dir, labels=False)
    v.hud_visible = False
    img = v.screenshot()
    return img[75:85, 95:105, :3].reshape(-1, 3).astype(float).mean(axis=0)


def test_single_sided_back_faces_are_culled():
    background = centre_pixel(create_stage(None, root="World", up_axis="Z"))
    back = centre_pixel(quad_stage(double_sided=False))
    front = centre_pixel(quad_stage(double_sided=False), view_dir=(0.0, -1.0, 0.0))
    both = centre_pixel(quad_stage(double_sided=True))
    assert np.abs(back - background).max() < 3  # seen from behind: not drawn (doubleSided = 0)
    assert front[0] > front[2] + 60 and both[0] > both[2] + 60  # from the front, or double-sided: red


def test_opacity_blends_with_what_is_behind():
    opaque = centre_pixel(quad_stage(double_sided=True, opacity=None))
    half = centre_pixel(quad_stage(double_sided=True, opacity=0.5))
    background = centre_pixel(create_stage(None, root="World", up_axis="Z"))
    # between the background and the opaque colour in every channel that differs
    for c in range(3):
        lo, hi = sorted((opaque[c], background[c]))
        if hi - lo > 30:
            assert lo + 8 < half[c] < hi - 8, (c, opaque, half, background)


@pytest.mark.parametrize("size", [(320, 200), (200, 320), (480, 160)])
@pytest.mark.parametrize("shape", ["cube", "row"])
def test_framing_leaves_a_margin(size, shape):
    if shape == "cube":
        stage = create_stage(None, root="World", up_axis="Z")
        UsdGeom.Cube.Define(stage, "/World/Cube").CreateSizeAttr(1.0)
    else:
        stage = boxes(values=tuple(float(i) for i in range(8)), spacing=3.0)
    v = Viewer(stage, size=size, quality="flat", labels=False)
    v.hud_visible = False
    img = v.screenshot()[..., :3].astype(int)
    bg = Viewer(create_stage(None, root="World", up_axis="Z"), size=size, quality="flat", labels=False)
    bg.hud_visible = False
    empty = bg.screenshot()[..., :3].astype(int)
    drawn = np.abs(img - empty).max(axis=2) > 12
    assert drawn.any()
    border = np.zeros_like(drawn)
    border[:3, :] = border[-3:, :] = True
    border[:, :3] = border[:, -3:] = True
    assert not (drawn & border).any(), "the scene touches the image edge"
    ys, xs = np.nonzero(drawn)
    fill = max((xs.max() - xs.min()) / size[0], (ys.max() - ys.min()) / size[1])
    assert fill > 0.5  # and it is not lost in the middle either


def test_legend_does_not_cover_the_scene():
    stage = boxes(values=tuple(float(10 * i) for i in range(10)), spacing=3.0)
    w, h = 480, 240
    v = Viewer(stage, color_by="temperature", vmin=0, vmax=100, size=(w, h), quality="flat", labels=False)
    v.hud_visible = True
    v.frame_all()
    for i in range(10):
        x, _ = v.object_screen_position(f"/World/Box{i}")
        assert x < w - 120 - 8, f"Box{i} at x={x:.0f} is under the legend"


def test_missing_reference_is_named(tmp_path):
    p = tmp_path / "cookie.usda"
    stage = create_stage(p, root="World", up_axis="Z")
    stage.DefinePrim("/World/Cookie").GetReferences().AddReference("./cookie_geo.usda")
    stage.Save()
    v = Viewer(str(p), size=(200, 160), labels=False)
    assert any("missing referenced file" in n and "cookie_geo.usda" in n for n in v.notes), v.notes
    r = subprocess.run([sys.executable, "-m", "twinstage", "view", str(p), "--screenshot", str(tmp_path / "c.png"),
                        "--size", "160x120"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "cookie_geo.usda" in r.stderr and "missing referenced file" in r.stderr, r.stderr


def test_the_stage_camera_is_used():
    stage = create_stage(None, root="World", up_axis="Z")
    UsdGeom.Cube.Define(stage, "/World/A").CreateSizeAttr(1.0)
    far = UsdGeom.Cube.Define(stage, "/World/B")
    far.AddTranslateOp().Set(Gf.Vec3d(100, 0, 0))
    cam = UsdGeom.Camera.Define(stage, "/World/Cam")
    # at (0, -10, 0) looking along +Y (a USD camera looks down its -Z, with +Y up)
    cam.AddTranslateOp().Set(Gf.Vec3d(0, -10, 0))
    cam.AddRotateXOp().Set(90.0)
    cam.CreateFocalLengthAttr(50.0)
    v = Viewer(stage, size=(240, 160), quality="flat", labels=False)
    v.hud_visible = False
    v.screenshot()
    ax, ay = v.object_screen_position("/World/A")
    assert abs(ax - 120) < 3 and abs(ay - 80) < 3  # the camera's target is in the middle
    bx, _ = v.object_screen_position("/World/B")
    assert not 0 <= bx <= 240  # and what it does not see stays out of view
    v.scene_camera = False
    v.frame_all()
    bx, _ = v.object_screen_position("/World/B")
    assert 0 <= bx <= 240  # framing the bounds instead shows both
