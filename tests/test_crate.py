"""The crate (.usdc) fast path of read_twin: the same twin as the prim-by-prim reader, or a clear step aside.

``_crate`` parses a .usdc file's sections with numpy; ``_crate_twin`` decodes every
``twin:*`` default; ``_crate_stage`` builds the whole description when composition
cannot change it. Every test compares against the prim-by-prim reader on the same
stage, and checks which path ran (``stats["crate"]``: "read" or the reason it stepped
aside).
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pxr import Sdf, Usd

from _twinread import reference_description

import twinstage
from twinstage.models import builtin_models
from twinstage.usd import SchemaError, create_stage, declare_asset, declare_attribute, open_stage, read_twin
from twinstage.usd import _crate, _crate_twin
from twinstage.usd._read_layers import LayerReader, same_entry
from twinstage.usd._writer import open_live_stage

_reference = reference_description


def _check(stage: Usd.Stage, crate: str | None = "read"):
    """read_twin (no cache) == the reference; ``crate``: the expected stats['crate'] (a substring)."""
    want = _reference(stage)
    got = read_twin(stage, cache=False)
    assert got.assets == want[0]
    assert got.declarations == want[1]
    if crate is not None:
        assert crate in got.stats.get("crate", ""), got.stats
    return got


def _layer_matches(path: Path) -> int:
    """layer_specs gives, for every prim spec, what LayerReader extracts through Sdf."""
    c = _crate.Crate(path)
    try:
        specs = _crate_twin.layer_specs(c)
    finally:
        c.close()
    layer = Sdf.Layer.FindOrOpen(str(path))
    reader = LayerReader(layer, None)
    n = 0

    def visit(p: Sdf.Path) -> None:
        nonlocal n
        if p.IsPrimPath():
            assert same_entry(reader._extract(layer.GetPrimAtPath(p)), specs[str(p)]), p
            n += 1

    layer.Traverse("/", visit)
    return n


def test_factory_reads_through_the_crate(factory_1k):
    got = _check(open_stage(factory_1k))
    assert len(got.assets) == 1200 and got.stats["slow_prims"] == 0
    assert _layer_matches(factory_1k) > 1200


def _typed(tmp_path: Path) -> Path:
    """One asset per value encoding a crate file has (inlined or not), plus odd ones."""
    path = tmp_path / "typed.usdc"
    stage = create_stage(path, root="W")
    V = Sdf.ValueTypeNames
    values = [
        ("d_small", V.Double, 0.5), ("d_wide", V.Double, 0.1), ("d_big", V.Double, 1e300), ("f", V.Float, 0.1), ("h", V.Half, 0.25),
        ("i", V.Int, -7), ("i64", V.Int64, 2**40 + 3), ("i64s", V.Int64, -5), ("u", V.UInt, 4000000000), ("u64", V.UInt64, 2**63 + 5),
        ("uc", V.UChar, 200), ("b", V.Bool, True), ("b0", V.Bool, False),
        ("p_int", V.Point3f, (1, -2, 3)), ("p_wide", V.Point3f, (0.1, 0.2, 0.3)), ("v3d", V.Vector3d, (1e10, -0.5, 2)), ("d3", V.Double3, (4, 5, 6)),
        ("f3", V.Float3, (0.25, 1.5, -7)),
    ]
    for i, (name, vt, value) in enumerate(values):
        prim = stage.DefinePrim(f"/W/{name}", "Xform")
        declare_asset(prim, kind="typed", asset_id=f"T{i}", model="")
        prim.AddAppliedSchema(f"TwinStateAPI:{name}")
        prim.CreateAttribute(f"twin:{name}", vt).Set(value)
        prim.CreateAttribute(f"twin:{name}:unit", V.Token).Set("1")
        prim.CreateAttribute(f"twin:{name}:description", V.String).Set(f"a {name}")
    # metadata of other types (a float min, an int max, a token unit), a non-twin attribute beside them
    m = stage.DefinePrim("/W/meta", "Xform")
    declare_asset(m, kind="typed")
    declare_attribute(m, "x", "float", 3.0, unit="m", min=-1.0, max=10.0)
    m.GetAttribute("twin:x:min").Set(-1.0)
    m.CreateAttribute("twin:x:max", V.Int).Set(10)
    m.CreateAttribute("other", V.Double).Set(1.0)
    stage.GetRootLayer().Save()
    return path


def test_every_value_encoding_decodes_as_sdf_reads_it(tmp_path):
    path = _typed(tmp_path)
    assert _layer_matches(path) > 18
    stage = open_stage(path)
    got = _check(stage)
    vals = {d.name: d.value for d in got.declarations}
    assert vals["d_wide"] == 0.1 and vals["d_big"] == 1e300 and vals["u64"] == 2**63 + 5 and vals["i64"] == 2**40 + 3
    assert vals["p_wide"] == tuple(float(x) for x in stage.GetPrimAtPath("/W/p_wide").GetAttribute("twin:p_wide").Get())
    assert vals["b"] is True and vals["uc"] == 200


@pytest.mark.parametrize(
    "author",
    [
        pytest.param(lambda p: p.GetAttribute("twin:x:role").Set("bogus"), id="bad-role"),
        pytest.param(lambda p: p.GetAttribute("twin:x:min").Set(5.0), id="min-above-max"),
        pytest.param(lambda p: p.GetAttribute("twin:x").Set(math.inf), id="infinite"),
        pytest.param(lambda p: p.GetAttribute("twin:x").Set(math.nan), id="nan"),
        pytest.param(lambda p: p.AddAppliedSchema("TwinStateAPI:missing"), id="no-value-attribute"),
        pytest.param(lambda p: (p.AddAppliedSchema("TwinStateAPI:s"), p.CreateAttribute("twin:s", Sdf.ValueTypeNames.String).Set("x")), id="unsupported-type"),
        pytest.param(lambda p: p.GetAttribute("twin:x").Block(), id="value-block"),
        pytest.param(lambda p: p.CreateAttribute("twin:x:range", Sdf.ValueTypeNames.StringArray).Set(["m"]), id="array-attribute"),
        pytest.param(lambda p: p.CreateAttribute("twin:x:description", Sdf.ValueTypeNames.Asset).Set("a.png"), id="asset-metadata"),
    ],
)
def test_bad_declarations_raise_the_same_schema_error(tmp_path, author):
    path = tmp_path / "odd.usdc"
    stage = create_stage(path, root="W")
    good = stage.DefinePrim("/W/Good", "Xform")
    declare_asset(good, kind="k")
    declare_attribute(good, "x", "float", 1.0, unit="m", min=0.0, max=2.0)
    prim = stage.DefinePrim("/W/A", "Xform")
    declare_asset(prim, kind="k")
    declare_attribute(prim, "x", "float", 1.0, unit="m", min=0.0, max=2.0)
    author(prim)
    stage.GetRootLayer().Save()
    stage = open_stage(path)
    try:
        want = _reference(stage)
    except SchemaError as exc:
        with pytest.raises(SchemaError) as got:
            read_twin(stage, cache=False)
        assert str(got.value) == str(exc)
        return
    got = read_twin(stage, cache=False)  # odd but valid (e.g. metadata the builder stringifies)
    assert (got.assets, got.declarations) == want


def _traversal_scene(path: Path) -> None:
    """Children in a non-alphabetical order, prims a traversal skips, instances of an internal prototype."""
    stage = create_stage(path, root="Plant")
    for name in ("Zeta", "Alpha", "Mid"):  # primChildren keeps this order
        prim = stage.DefinePrim(f"/Plant/{name}", "Xform")
        declare_asset(prim, kind="k")
        declare_attribute(prim, "t", "float", 1.0, unit="degC")
    declare_asset(stage.DefinePrim("/Plant/Over/Inside", "Xform"), kind="k")
    stage.GetPrimAtPath("/Plant/Over").SetSpecifier(Sdf.SpecifierOver)  # an over: not defined, its child neither
    cls = stage.CreateClassPrim("/Plant/_Class")  # abstract
    declare_asset(stage.DefinePrim(cls.GetPath().AppendChild("InClass"), "Xform"), kind="k")
    off = stage.DefinePrim("/Plant/Off", "Xform")
    declare_asset(stage.DefinePrim("/Plant/Off/Child", "Xform"), kind="k")
    off.SetActive(False)
    proto = stage.CreateClassPrim("/Plant/Protos")
    body = stage.DefinePrim("/Plant/Protos/Machine", "Xform")
    stage.DefinePrim("/Plant/Protos/Machine/Body", "Cube")
    for i in range(3):
        m = stage.DefinePrim(f"/Plant/Hall/M{i}", "Xform")
        m.GetReferences().AddInternalReference(body.GetPath())
        m.SetInstanceable(True)
        declare_asset(m, kind="machine", asset_id=f"M{i}")
        declare_attribute(m, "temperature", "float", 20.0 + i, unit="degC", min=-50.0, max=400.0, role="state")
        declare_attribute(m, "position", "vec3", (float(i), 0.0, 0.0), unit="m", drives="xformOp:translate")
    explicit = stage.DefinePrim("/Plant/Hall/Explicit", "Xform")
    op = Sdf.TokenListOp()
    op.explicitItems = ["TwinAssetAPI", "TwinStateAPI:v"]
    explicit.SetMetadata("apiSchemas", op)
    explicit.CreateAttribute("twin:v", Sdf.ValueTypeNames.Double).Set(2.0)
    deleted = stage.DefinePrim("/Plant/Hall/Deleted", "Xform")
    op = Sdf.TokenListOp()
    op.prependedItems = ["TwinAssetAPI"]
    op.deletedItems = ["TwinStateAPI:gone"]
    deleted.SetMetadata("apiSchemas", op)
    assert proto
    stage.GetRootLayer().Save()


def test_traversal_order_and_skipped_prims(tmp_path):
    path = tmp_path / "plant.usdc"
    _traversal_scene(path)
    got = _check(open_stage(path))
    assert [a.path for a in got.assets] == ["/Plant/Zeta", "/Plant/Alpha", "/Plant/Mid", "/Plant/Hall/M0", "/Plant/Hall/M1", "/Plant/Hall/M2",
                                            "/Plant/Hall/Explicit", "/Plant/Hall/Deleted"]


def _composed(tmp_path: Path, what: str) -> Usd.Stage:
    path = tmp_path / f"{what}.usdc"
    _traversal_scene(path)
    stage = Usd.Stage.Open(str(path))
    if what == "external":
        lib = tmp_path / "lib.usda"
        s = create_stage(lib, root="Lib")
        declare_asset(s.DefinePrim("/Lib/P", "Xform"), kind="pump")
        s.GetRootLayer().Save()
        stage.DefinePrim("/Plant/Ext").GetReferences().AddReference(str(lib), "/Lib/P")
    elif what == "twin-in-prototype":
        declare_asset(stage.GetPrimAtPath("/Plant/Protos/Machine/Body"), kind="sensor")
    elif what == "active-on-prototype":
        stage.GetPrimAtPath("/Plant/Protos/Machine").SetActive(False)
    elif what == "variants":
        vs = stage.GetPrimAtPath("/Plant/Mid").GetVariantSets().AddVariantSet("size")
        vs.AddVariant("big")
    elif what == "inherits":
        stage.GetPrimAtPath("/Plant/Mid").GetInherits().AddInherit("/Plant/_Class")
    elif what == "not-instanceable":
        stage.GetPrimAtPath("/Plant/Hall/M1").SetInstanceable(False)
    stage.GetRootLayer().Save()
    return open_stage(path)


@pytest.mark.parametrize(
    "what, reason",
    [
        ("external", "more than its root layer"),
        ("twin-in-prototype", "twin data"),
        ("active-on-prototype", "authors active"),
        ("variants", "variant"),
        ("inherits", "inheritPaths"),
        ("not-instanceable", "not a locally defined instanceable"),
    ],
)
def test_composition_the_fast_path_does_not_model_steps_aside(tmp_path, what, reason):
    _check(_composed(tmp_path, what), crate=reason)


def test_edits_and_session_opinions_step_aside(tmp_path):
    path = tmp_path / "plant.usdc"
    _traversal_scene(path)
    stage = open_stage(path)
    stage.GetPrimAtPath("/Plant/Hall/M0").GetAttribute("twin:temperature").Set(99.0)  # unsaved edit of the root layer
    assert _check(stage, crate="edited").declarations
    stage = open_stage(path)
    stage.SetEditTarget(stage.GetSessionLayer())
    stage.GetPrimAtPath("/Plant/Hall/M0").GetAttribute("twin:temperature").Set(98.0)
    _check(stage, crate="session")



def test_a_twin_opened_with_its_live_layer_reads_through_the_crate(factory_1k):
    stage, live = open_live_stage(factory_1k)  # what twinstage.open opens: the live layer in the session already
    assert list(stage.GetSessionLayer().subLayerPaths) == [live.identifier]
    assert _check(stage).stats["slow_prims"] == 0

    class Probe(builtin_models()["thermal"]):  # the factory's machine model, looking at the stage as the twin read it
        def bind(self, table, rows, stage):
            self.read = _check(stage).stats
            super().bind(table, rows, stage)

    probe = Probe()
    with twinstage.open(factory_1k, models=[probe]) as twin:
        assert probe.read["crate"] == "read" and twin.models["thermal"] is probe
        assert list(twin.stage.GetSessionLayer().subLayerPaths) == [twin.live_layer.identifier]
        assert "session" in read_twin(twin.stage, cache=False).stats["crate"]  # now it holds the columns: step aside


def _plant_live(tmp_path: Path) -> tuple[Usd.Stage, Sdf.Layer]:
    path = tmp_path / "plant.usdc"
    _traversal_scene(path)
    stage, live = open_live_stage(path)
    _check(stage)
    return stage, live


def test_field_less_overs_in_the_live_layer_change_nothing(tmp_path):
    stage, live = _plant_live(tmp_path)
    for path in ("/Plant/Zeta", "/Plant/Hall/M0/Body", "/Plant/Over/Inside", "/Nowhere/Deep"):
        Sdf.CreatePrimInLayer(live, path)
    _check(stage)


def _opinions(tmp_path: Path) -> dict:
    keep = []  # layers a sublayer path names must outlive the test

    def over(live, path):
        return Sdf.CreatePrimInLayer(live, path)

    def attribute(stage, live):
        Sdf.AttributeSpec(over(live, "/Plant/Zeta"), "twin:t", Sdf.ValueTypeNames.Double).default = 5.0

    def define(stage, live):
        over(live, "/Plant/Extra").specifier = Sdf.SpecifierDef

    def inactive(stage, live):
        over(live, "/Plant/Zeta").active = False

    def schemas(stage, live):
        op = Sdf.TokenListOp()
        op.deletedItems = ["TwinAssetAPI"]
        over(live, "/Plant/Mid").SetInfo("apiSchemas", op)

    def documentation(stage, live):
        over(live, "/Plant/Alpha").SetInfo("documentation", "a note")

    def variant_set(stage, live):
        Sdf.VariantSetSpec(over(live, "/Plant/Alpha"), "look")

    def live_metadata(stage, live):
        live.customLayerData = {"note": 1}

    def session_metadata(stage, live):
        stage.GetSessionLayer().customLayerData = {"note": 1}

    def session_prim(stage, live):
        Sdf.CreatePrimInLayer(stage.GetSessionLayer(), "/Plant")

    def offset(stage, live):
        stage.GetSessionLayer().subLayerOffsets[0] = Sdf.LayerOffset(5.0)

    def nested(stage, live):
        keep.append(Sdf.Layer.CreateAnonymous())
        live.subLayerPaths.append(keep[-1].identifier)

    def file_layer(stage, live):
        f = tmp_path / "empty.usda"
        Sdf.Layer.CreateNew(str(f)).Save()
        stage.GetSessionLayer().subLayerPaths.append(str(f))

    def edit_target(stage, live):
        stage.SetEditTarget(Usd.EditTarget(live))
        stage.GetPrimAtPath("/Plant/Hall/M1").GetAttribute("twin:temperature").Set(98.0)

    return {f.__name__: f for f in (attribute, define, inactive, schemas, documentation, variant_set, live_metadata,
                                    session_metadata, session_prim, offset, nested, file_layer, edit_target)}


@pytest.mark.parametrize("opinion", sorted(_opinions(Path("."))))
def test_a_real_opinion_in_the_session_layers_steps_aside(tmp_path, opinion):
    stage, live = _plant_live(tmp_path)
    _opinions(tmp_path)[opinion](stage, live)
    _check(stage, crate="session")

def test_a_file_rewritten_after_the_stage_opened_is_not_trusted(tmp_path):
    path = tmp_path / "plant.usdc"
    _traversal_scene(path)
    stage = open_stage(path)
    copy = tmp_path / "copy.usdc"
    copy.write_bytes(path.read_bytes())
    other = Usd.Stage.Open(str(copy))  # its own layer: the open stage's layer stays as it was read
    for prim in other.Traverse():
        if prim.HasAttribute("twin:temperature"):
            prim.GetAttribute("twin:temperature").Set(-1.0)
    other.GetRootLayer().Export(str(tmp_path / "new.usdc"))
    os.replace(tmp_path / "new.usdc", path)  # the bytes on disk no longer match the open stage
    got = _check(stage, crate=None)
    assert got.stats["crate"] != "read"
    assert {d.value for d in got.declarations if d.name == "temperature"} == {20.0, 21.0, 22.0}


# -- hostile bytes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_crate(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("crate") / "t.usdc"
    _traversal_scene(path)
    return path.read_bytes()


def _parse(path: Path) -> None:
    """Crate + layer_specs: a result or CrateError, nothing else."""
    try:
        c = _crate.Crate(path)
    except _crate.CrateError as exc:
        assert str(path) in str(exc), exc  # the message names the file (and what was wrong)
        return
    try:
        _crate_twin.layer_specs(c)
    except _crate.CrateError:
        pass
    finally:
        c.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupt_bytes_are_a_crate_error_never_a_crash(small_crate, tmp_path_factory, data):
    raw = bytearray(small_crate)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))))
    path = tmp_path_factory.mktemp("bad") / "bad.usdc"
    path.write_bytes(bytes(raw if cut is None else raw[:cut]))
    _parse(path)


def test_huge_counts_in_a_header_are_refused_before_allocating(small_crate, tmp_path):
    c = _crate.Crate(_write(tmp_path / "ok.usdc", small_crate))
    pos = c.sections["TOKENS"][0]
    specs = c.sections["SPECS"][0]
    c.close()
    for at in (pos, specs):  # a token count and a spec count of 2^60
        raw = bytearray(small_crate)
        raw[at : at + 8] = struct.pack("<Q", 1 << 60)
        with pytest.raises(_crate.CrateError):
            _crate.Crate(_write(tmp_path / "huge.usdc", bytes(raw)))
    with pytest.raises(_crate.CrateError, match="not a crate file"):
        _crate.Crate(_write(tmp_path / "text.usdc", b"#usda 1.0\n" + b" " * 100))
    with pytest.raises(_crate.CrateError, match="too small"):
        _crate.Crate(_write(tmp_path / "tiny.usdc", b"PXR-USDC"))


def _write(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


# -- decode_ints against a plain reference decoder ---------------------------------------------


def _reference_decode_ints(raw: bytes, n: int) -> list[int]:
    """Sdf_IntegerCompression, one value at a time (integerCoding.cpp): common delta, 2-bit codes, deltas."""
    common = int.from_bytes(raw[:4], "little", signed=True)
    ncode = (2 * n + 7) // 8
    pos, cur, out = 4 + ncode, 0, []
    for i in range(n):
        code = (raw[4 + i // 4] >> (2 * (i % 4))) & 3
        size = (0, 1, 2, 4)[code]
        delta = common if code == 0 else int.from_bytes(raw[pos : pos + size], "little", signed=True)
        pos += size
        cur = (cur + delta + 2**31) % 2**32 - 2**31  # int32 running sum, wrapping
        out.append(cur)
    return out


def _encode_ints(codes: list[int], deltas: list[int], common: int, pad: bytes = b"") -> bytes:
    code_bytes = bytearray((len(codes) + 3) // 4)
    body = b""
    for i, (c, d) in enumerate(zip(codes, deltas)):
        code_bytes[i // 4] |= c << (2 * (i % 4))
        if c:
            body += d.to_bytes((0, 1, 2, 4)[c], "little", signed=True)
    return struct.pack("<i", common) + bytes(code_bytes) + body + pad


_DELTA = {1: st.integers(-128, 127), 2: st.integers(-(2**15), 2**15 - 1), 3: st.integers(-(2**31), 2**31 - 1)}


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_decode_ints_matches_a_plain_decoder(data):
    n = data.draw(st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 9]), st.integers(0, 300)))
    codes = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    deltas = [data.draw(_DELTA[c]) if c else 0 for c in codes]
    common = data.draw(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]) | st.integers(-(2**31), 2**31 - 1))
    pad = data.draw(st.binary(max_size=6))  # LZ4 output may run past the deltas
    raw = _encode_ints(codes, deltas, common, pad)
    got = _crate.decode_ints(raw, n)
    assert got.dtype == np.int32 and got.tolist() == _reference_decode_ints(raw, n)


def test_decode_ints_wraps_and_spans_chunks():
    # every code kind, a length that is not a multiple of 4, past one chunk, sums beyond int32 both ways
    n = 3 * _crate._CHUNK + 5
    codes = [(0, 1, 2, 3, 3, 3)[i % 6] for i in range(n)]
    deltas = [(0, -128, 2**15 - 1, 2**31 - 1, -(2**31), 2**31 - 1)[i % 6] for i in range(n)]
    raw = _encode_ints(codes, deltas, 2**31 - 1)
    got = _crate.decode_ints(raw, n)
    assert got.tolist() == _reference_decode_ints(raw, n)
    assert _crate.decode_ints(raw, 1).tolist() == [2**31 - 1]
    assert _crate.decode_ints(raw, 0).tolist() == [] and _crate.decode_ints(b"", 0).dtype == np.int32
    # the code bits past n in the last code byte are ignored, whatever they say
    assert _crate.decode_ints(struct.pack("<i", 5) + bytes([0b11111100]), 1).tolist() == [5]


def test_decode_ints_bad_blocks_say_what_is_wrong():
    with pytest.raises(_crate.CrateError, match="integer block of 3 bytes is too short for 1 values"):
        _crate.decode_ints(b"\0\0\0", 1)
    with pytest.raises(_crate.CrateError, match="integer block of 5 bytes is too short for 5 values"):
        _crate.decode_ints(b"\0" * 5, 5)
    raw = _encode_ints([3, 3, 1], [7, 8, 9], 0)
    with pytest.raises(_crate.CrateError, match="holds 8 bytes of deltas, its codes need 9"):
        _crate.decode_ints(raw[:-1], 3)
