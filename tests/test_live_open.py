"""twinstage.open puts the live layer in the session layer before the stage is composed (issue 13).

``open_live_stage`` must give the stage ``open_stage`` gives (same prims, same errors),
plus one live layer: the session layer's only sublayer, holding an ``over`` at
``state_prim_path(stage)``. Where the root layer alone cannot say where that is
(``root_prim_before_open`` is None), the layer is inserted after opening, as for a
user's own stage.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pxr import Sdf, Usd

import twinstage
from twinstage import Twin
from twinstage.usd import StageError, open_stage
from twinstage.usd._session import root_prim_before_open
from twinstage.usd._writer import STATE_PRIM, create_live_layer, open_live_stage, state_prim_path


def _assert_live(stage: Usd.Stage, live: Sdf.Layer) -> None:
    """One live layer, the session's only sublayer, with the state prim's ``over`` where the writers look."""
    session = stage.GetSessionLayer()
    assert list(session.subLayerPaths) == [live.identifier]
    assert not session.rootPrims
    spec = live.GetPrimAtPath(state_prim_path(stage))
    assert spec is not None and spec.specifier == Sdf.SpecifierOver
    prim = stage.GetPrimAtPath(state_prim_path(stage))
    assert not prim or not prim.IsDefined()  # absent under an inactive root prim


def _same_stage(path: Path, *, load: str = "all") -> None:
    """open_live_stage == open_stage + create_live_layer (the way before): the same prims in the same order,
    defined or not, and the same state prim; or the same error."""
    try:
        before = open_stage(path, load=load)
    except StageError as exc:
        with pytest.raises(StageError) as info:
            open_live_stage(path, load=load)
        assert str(info.value) == str(exc)
        return
    create_live_layer(before)
    stage, live = open_live_stage(path, load=load)
    _assert_live(stage, live)
    assert [p.GetPath() for p in stage.Traverse()] == [p.GetPath() for p in before.Traverse()]
    assert [p.GetPath() for p in stage.TraverseAll()] == [p.GetPath() for p in before.TraverseAll()]
    assert state_prim_path(stage) == state_prim_path(before)


def test_twinstage_open_composes_with_the_live_layer(pump_scene):
    root = Sdf.Layer.FindOrOpen(str(pump_scene))
    assert root_prim_before_open(root) == Sdf.Path("/Testbed")  # known before opening: no insert after it
    with twinstage.open(pump_scene) as twin:
        session = twin.stage.GetSessionLayer()
        assert list(session.subLayerPaths) == [twin.live_layer.identifier]
        assert twin.live_layer.GetPrimAtPath("/Testbed/TwinState").specifier == Sdf.SpecifierDef  # the columns
        twin.set("/Testbed/Valve1", opening=0.25)
        twin.step()
        assert twin.live_layer.GetAttributeAtPath("/Testbed/Valve1.twin:opening").default == 0.25
        assert twin.stage.GetPrimAtPath("/Testbed/Valve1").GetAttribute("twin:opening").Get() == 0.25
        assert twin.stage.GetRootLayer().GetAttributeAtPath("/Testbed/Valve1.twin:opening").default != 0.25
    headless = twinstage.open(pump_scene, headless=True)
    assert headless.live_layer is None and not headless.stage.GetSessionLayer().subLayerPaths


def test_a_users_own_stage_gets_its_live_layer_inserted(pump_scene):
    stage = open_stage(pump_scene)
    with Twin(stage) as twin:
        assert list(stage.GetSessionLayer().subLayerPaths) == [twin.live_layer.identifier]
        assert twin.live_layer.GetPrimAtPath(state_prim_path(stage)) is not None
        fork = twin.fork(copy_state=True)
        assert fork.live_layer is None and list(stage.GetSessionLayer().subLayerPaths) == [twin.live_layer.identifier]


def _write(path: Path, text: str) -> Path:
    path.write_text("#usda 1.0\n" + text)
    return path


def test_where_the_root_layer_alone_cannot_say_the_layer_is_inserted_after_opening(tmp_path):
    _write(tmp_path / "weak.usda", 'def Xform "Early" {\n}\n')
    # no defaultPrim and a sublayer: the sublayer may add the first root prim
    scene = _write(tmp_path / "s.usda", '(\n    subLayers = [@./weak.usda@]\n)\ndef Xform "Late" {\n}\n')
    assert root_prim_before_open(Sdf.Layer.FindOrOpen(str(scene))) is None
    stage, live = open_live_stage(scene)
    _assert_live(stage, live)
    assert state_prim_path(stage) == Sdf.Path("/Early").AppendChild(STATE_PRIM)
    _same_stage(scene)


@pytest.mark.parametrize("text, expected", [
    ('(\n    defaultPrim = "B"\n)\ndef "A" {\n}\nover "B" {\n}\n', "/B"),  # the default prim, even an over
    ('def "A" {\n}\ndef "B" {\n}\n', "/A"),
    ('class "C" {\n}\nover "O" {\n}\ndef "Off" (\n    active = false\n)\n{\n}\ndef "On" {\n}\n', "/On"),
    ('(\n    defaultPrim = "Missing"\n)\ndef "A" {\n}\n', "/A"),
    ('(\n    defaultPrim = "/A/B"\n)\ndef "A" {\n    def "B" {\n    }\n}\n', None),  # a nested default prim: after opening
    ('def "A" (\n    references = </B>\n)\n{\n}\ndef "B" {\n}\n', None),  # an arc may decide active/specifier
    ('class "C" {\n}\n', None),  # no root prim a traversal visits
])
def test_root_prim_before_open(tmp_path, text, expected):
    scene = _write(tmp_path / "s.usda", text)
    got = root_prim_before_open(Sdf.Layer.FindOrOpen(str(scene)))
    assert got == (Sdf.Path(expected) if expected else None)
    _same_stage(scene)


@pytest.mark.parametrize("name, data", [
    ("nope.usda", None),
    ("dir.usda", "dir"),
    ("scene.txt", b'#usda 1.0\ndef "A" {\n}\n'),
    ("broken.usda", b'#usda 1.0\ndef Xform "A" {\n    double x = \n'),
    ("header.usda", b"#usda 1.0\n"),
    ("empty.usda", b""),
    ("garbage.usdc", bytes(range(256)) * 16),
    ("garbage.usd", b"not usd at all"),
    ("magic.usdc", b"PXR-USDC" + bytes(200)),
])
def test_bad_files_give_the_errors_open_stage_gives(tmp_path, name, data):
    p = tmp_path / name
    if data == "dir":
        p.mkdir()
    elif data is not None:
        p.write_bytes(data)
    with pytest.raises(StageError) as want:
        open_stage(p)
    with pytest.raises(StageError) as got:
        open_live_stage(p)
    assert str(got.value) == str(want.value) and str(p) in str(got.value)
    with pytest.raises(StageError) as via_open:
        twinstage.open(p)
    assert str(via_open.value) == str(want.value)


def test_a_bad_load_policy_is_refused(pump_scene):
    with pytest.raises(StageError, match="load must be 'all' or 'none', not 'some'"):
        open_live_stage(pump_scene, load="some")


def test_a_truncated_usdc_gives_the_error_open_stage_gives(pump_scene, tmp_path):
    data = pump_scene.with_name(pump_scene.stem + "_parts.usdc").read_bytes()
    p = tmp_path / "truncated.usdc"
    p.write_bytes(data[: len(data) // 2])
    _same_stage(p)


def test_load_none_keeps_payloads_unloaded(tmp_path):
    _write(tmp_path / "part.usda", '(\n    defaultPrim = "P"\n)\ndef Xform "P" {\n    def Cube "Box" {\n    }\n}\n')
    scene = _write(tmp_path / "s.usda", '(\n    defaultPrim = "W"\n)\ndef Xform "W" {\n'
                   '    def Xform "M" (\n        payload = @./part.usda@\n    )\n    {\n    }\n}\n')
    stage, live = open_live_stage(scene, load="none")
    assert not stage.GetPrimAtPath("/W/M").IsLoaded() and not stage.GetPrimAtPath("/W/M/Box")
    _assert_live(stage, live)
    _same_stage(scene, load="none")


def test_usd_wg_files_open_the_same_way(shared_data):
    files = sorted(p for p in (shared_data / "usd-wg").rglob("*") if p.is_file() and p.suffix.lower() in {".usd", ".usda", ".usdc", ".usdz"})
    assert len(files) >= 25
    for f in files:
        _same_stage(f)


# -- any small root layer: the guess is right or absent -----------------------------------------

_TMP = Path(tempfile.mkdtemp(prefix="twinstage-live-"))
_counter = itertools.count()
_NAMES = ("A", "B", "C")


@st.composite
def _root_layers(draw) -> str:
    lines = []
    default = draw(st.sampled_from([None, "A", "B", "C", "Missing"]))
    meta = [f'    defaultPrim = "{default}"'] if default else []
    if draw(st.booleans()):
        meta.append("    subLayers = [@./weak.usda@]")
    if meta:
        lines.append("(\n" + "\n".join(meta) + "\n)")
    for name in draw(st.lists(st.sampled_from(_NAMES), unique=True, max_size=3)):
        spec = draw(st.sampled_from(["def", "over", "class"]))
        fields = []
        active = draw(st.sampled_from([None, True, False]))
        if active is not None:
            fields.append(f"active = {str(active).lower()}")
        arc = draw(st.sampled_from([None, "references = </Target>", "payload = @./weak.usda@</Target>", "inherits = </Klass>"]))
        if arc:
            fields.append(arc)
        head = f'{spec} "{name}"' + (" (\n        " + "\n        ".join(fields) + "\n    )\n" if fields else " ")
        lines.append(head + "{\n}")
    for extra in draw(st.lists(st.sampled_from(["Target", "Klass"]), unique=True, max_size=2)):
        spec = draw(st.sampled_from(["def", "over", "class"]))
        active = draw(st.booleans())
        lines.append(f'{spec} "{extra}" (\n    active = {str(active).lower()}\n)\n{{\n}}')
    return "\n".join(lines) + "\n"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_root_layers(), weak=st.sampled_from(['def "A" {\n}\n', 'over "B" {\n}\n', 'def "Target" {\n}\n', ""]),
       load=st.sampled_from(["all", "none"]))
def test_any_small_root_layer_opens_as_open_stage_opens_it(text, weak, load):
    d = _TMP / f"case{next(_counter)}"
    d.mkdir()
    _write(d / "weak.usda", weak)
    scene = _write(d / "s.usda", text)
    guess = root_prim_before_open(Sdf.Layer.FindOrOpen(str(scene)))
    try:
        plain = open_stage(scene, load=load)  # no live layer at all
    except StageError:
        plain = None
    if guess is not None and plain is not None:
        assert guess.AppendChild(STATE_PRIM) == state_prim_path(plain), text
    _same_stage(scene, load=load)
    for f in d.iterdir():
        os.unlink(f)
    d.rmdir()
