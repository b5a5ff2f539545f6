"""read_twin: the one-pass reader gives exactly what the prim-by-prim reader gives."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pxr import Sdf, Usd

from _twinread import reference_description

from twinstage.usd import SchemaError, create_stage, declare_asset, declare_attribute, open_stage, read_twin
from twinstage.usd import _readcache
from twinstage.usd._writer import open_live_stage

_reference = reference_description


def _same(stage: Usd.Stage, cache_dir: Path) -> dict:
    """read_twin == the reference without a cache, with a cold cache and with a warm one."""
    want = _reference(stage)
    stats = []
    for cache in (False, cache_dir, cache_dir):
        got = read_twin(stage, cache=cache)
        assert got.assets == want[0]
        assert got.declarations == want[1]
        assert got.prims == [a.path for a in want[0]]
        stats.append(got.stats)
    return {"cold": stats[1], "warm": stats[2]}


def test_pump_testbed(pump_scene, tmp_path):
    st_ = _same(open_stage(pump_scene), tmp_path / "cache")
    assert st_["warm"]["cached_layers"] >= 1
    assert st_["warm"]["slow_prims"] == 0


def test_factory_with_conveyor_items(factory_1k, tmp_path):
    stage = open_stage(factory_1k)
    st_ = _same(stage, tmp_path / "cache")
    assert st_["warm"]["slow_prims"] == 0 and st_["warm"]["cached_layers"] == 1
    got = read_twin(stage, cache=False)
    assert len(got.assets) == 1200
    assert {d.type for d in got.declarations} == {"float", "vec3"}
    assert any(d.drives == "xformOp:translate" for d in got.declarations)


def _asset_file(path: Path) -> None:
    """An asset library file: a pump declared in full, in a payload-able and a referenced flavour."""
    stage = create_stage(path, root="Lib")
    for name, speed in (("Pump", 0.5), ("Motor", 1.0)):
        prim = stage.DefinePrim(f"/Lib/{name}", "Xform")
        declare_asset(prim, kind="pump", asset_id=f"LIB-{name}", model="")
        declare_attribute(prim, "speed", "float", speed, unit="1", min=0.0, max=2.0, role="input", description="relative speed")
        declare_attribute(prim, "count", "int", 3, unit="1", role="parameter")
        declare_attribute(prim, "on", "bool", True, unit="1")
        declare_attribute(prim, "position", "vec3", (1.0, 2.0, 3.0), unit="m", drives="xformOp:translate")
    stage.GetRootLayer().Save()


def _composed_scene(tmp_path: Path) -> Path:
    """References, payloads, an inherited class, a variant set, sublayers and overrides."""
    lib = tmp_path / "lib.usda"
    _asset_file(lib)
    weak = tmp_path / "weak.usda"
    stage = create_stage(weak, root="Plant")
    # a class every pump inherits: stronger than the references (LIVRPS)
    cls = stage.CreateClassPrim("/_PumpDefaults")
    cls.CreateAttribute("twin:speed:description", Sdf.ValueTypeNames.String).Set("from the class")
    stage.GetRootLayer().Save()
    root = tmp_path / "plant.usda"
    stage = create_stage(root, root="Plant")
    stage.GetRootLayer().subLayerPaths.append("./weak.usda")
    for i in range(4):
        prim = stage.DefinePrim(f"/Plant/P{i}", "Xform")
        if i % 2:
            prim.GetPayloads().AddPayload("./lib.usda", "/Lib/Pump")
        else:
            prim.GetReferences().AddReference("./lib.usda", "/Lib/Motor")
        prim.GetInherits().AddInherit("/_PumpDefaults")
    # local overrides beat the referenced values; a new declaration on top of a referenced asset
    stage.GetPrimAtPath("/Plant/P0").GetAttribute("twin:speed").Set(1.5)
    stage.GetPrimAtPath("/Plant/P1").GetAttribute("twin:speed:unit").Set("percent")
    stage.GetPrimAtPath("/Plant/P1").GetAttribute("twin:speed:max").Set(150.0)
    declare_attribute(stage.GetPrimAtPath("/Plant/P2"), "level", "float", 0.25, unit="m", min=0.0, max=1.0)
    # a variant set that swaps a value
    p3 = stage.GetPrimAtPath("/Plant/P3")
    vs = p3.GetVariantSets().AddVariantSet("size")
    for v, speed in (("small", 0.2), ("big", 1.8)):
        vs.AddVariant(v)
        vs.SetVariantSelection(v)
        with vs.GetVariantEditContext():
            p3.GetAttribute("twin:speed").Set(speed)
    vs.SetVariantSelection("big")
    # a nested asset inside a referenced one, and a non-twin prim beside them
    inner = stage.DefinePrim("/Plant/P0/Inner", "Xform")
    declare_asset(inner, kind="sensor", asset_id="S1")
    declare_attribute(inner, "reading", "float", 7.0, unit="bar", role="measured")
    stage.DefinePrim("/Plant/Floor", "Cube")
    stage.GetRootLayer().Save()
    return root


def test_references_payloads_variants_inherits(tmp_path):
    root = _composed_scene(tmp_path)
    stage = open_stage(root)
    _same(stage, tmp_path / "cache")
    got = read_twin(stage, cache=False)
    values = {(d.prim, d.name): d for d in got.declarations}
    assert values[("/Plant/P0", "speed")].value == 1.5  # local override
    assert values[("/Plant/P1", "speed")].unit == "percent" and values[("/Plant/P1", "speed")].max == 150.0
    assert values[("/Plant/P3", "speed")].value == 1.8  # the selected variant
    assert values[("/Plant/P0", "speed")].description == "from the class"  # inherits are stronger than references (LIVRPS)
    assert values[("/Plant/P0", "count")].role == "parameter"
    assert values[("/Plant/P1", "position")].value == (1.0, 2.0, 3.0)
    assert [a.path for a in got.assets] == ["/Plant/P0", "/Plant/P0/Inner", "/Plant/P1", "/Plant/P2", "/Plant/P3"]
    # payloads unloaded: those assets are not on the stage for either reader
    unloaded = open_stage(root, load="none")
    _same(unloaded, tmp_path / "cache")
    assert [a.path for a in read_twin(unloaded, cache=False).assets] == ["/Plant/P0", "/Plant/P0/Inner", "/Plant/P2"]
    # an edit in the session layer (e.g. a live value) and a switched variant are seen too
    stage.SetEditTarget(stage.GetSessionLayer())
    stage.GetPrimAtPath("/Plant/P2").GetAttribute("twin:level").Set(0.75)
    stage.GetPrimAtPath("/Plant/P3").GetVariantSet("size").SetVariantSelection("small")
    # time samples in a stronger layer do not hide a weaker default (values are read at the default time)
    stage.GetPrimAtPath("/Plant/P0").GetAttribute("twin:count").Set(9, 5.0)
    _same(stage, tmp_path / "cache")
    assert {(d.prim, d.name): d.value for d in read_twin(stage, cache=False).declarations}[("/Plant/P2", "level")] == 0.75


def test_unsaved_edits_are_read_not_cached(pump_scene, tmp_path):
    stage = open_stage(pump_scene)
    cache = tmp_path / "cache"
    read_twin(stage, cache=cache)  # primes the cache for the file's bytes
    stage.GetPrimAtPath("/Testbed/Valve1").GetAttribute("twin:opening").Set(0.125)  # root layer now dirty
    assert stage.GetRootLayer().dirty
    _same(stage, cache)
    got = {(d.prim, d.name): d.value for d in read_twin(stage, cache=cache).declarations}
    assert got[("/Testbed/Valve1", "opening")] == 0.125


def _numbered(path: Path, offset: float) -> None:
    stage = create_stage(path, root="W")
    for i in range(40):
        prim = stage.DefinePrim(f"/W/A{i}", "Xform")
        declare_asset(prim, kind="k")
        declare_attribute(prim, "x", "float", offset + i, unit="m")
    stage.GetRootLayer().Save()


def test_a_file_changed_after_it_was_opened_is_not_served_from_cache(tmp_path):
    path = tmp_path / "s.usda"
    _numbered(path, 0.0)
    cache = tmp_path / "cache"
    opened = open_stage(path)  # holds the old content
    _numbered(tmp_path / "t.usda", 1000.0)
    path.write_bytes((tmp_path / "t.usda").read_bytes().replace(b"t.usda", b"s.usda"))
    # the key is the new bytes' hash, the layer still holds the old values: read what the stage holds
    old = _reference(opened)
    assert old[1][0].value == 0.0
    assert read_twin(opened, cache=cache).declarations == old[1]
    del opened
    # a fresh open of the new bytes finds an entry made from the old content: the spot check drops it
    fresh = open_stage(path)
    new = _reference(fresh)
    assert new[1][0].value == 1000.0
    got = read_twin(fresh, cache=cache)
    assert got.declarations == new[1]
    assert got.stats["cached_layers"] == 0
    assert read_twin(fresh, cache=cache).stats["cached_layers"] == 1  # and stores the right one


class _Boom:
    def __reduce__(self):
        return (Path("/nonexistent-twinstage-test").mkdir, ())


def test_a_planted_or_corrupt_cache_file_is_ignored(pump_scene, tmp_path):
    stage = open_stage(pump_scene)
    cache = _readcache.Cache(tmp_path / "cache")
    key = cache.key_for(stage.GetRootLayer())
    assert key
    cache.folder.mkdir(parents=True)
    target = cache.folder / f"{key}.pickle"
    target.write_bytes(pickle.dumps({"key": key, "specs": {"/Testbed/Pump": _Boom()}}))
    with pytest.raises(pickle.UnpicklingError):
        _readcache._PlainUnpickler(open(target, "rb")).load()
    assert cache.load(key) is None
    _same(stage, cache.folder)
    for junk in (b"", b"\x80\x05garbage", pickle.dumps([1, 2, 3]), pickle.dumps({"key": "other", "specs": {}})):
        target.write_bytes(junk)
        assert cache.load(key) is None
        assert read_twin(stage, cache=cache.folder).declarations == _reference(stage)[1]


def test_cache_off_by_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TWINSTAGE_READ_CACHE", "0")
    assert _readcache.Cache.open(None) is None
    monkeypatch.setenv("TWINSTAGE_READ_CACHE", str(tmp_path / "c"))
    assert _readcache.Cache.open(None).folder == tmp_path / "c"
    assert _readcache.Cache.open(False) is None


def _stage_with(tmp_path: Path, author) -> Usd.Stage:
    path = tmp_path / "odd.usda"
    stage = create_stage(path, root="W")
    prim = stage.DefinePrim("/W/A", "Xform")
    declare_asset(prim, kind="k")
    declare_attribute(prim, "x", "float", 1.0, unit="m", min=0.0, max=2.0)
    author(prim)
    stage.GetRootLayer().Save()
    return open_stage(path)


@pytest.mark.parametrize(
    "author",
    [
        pytest.param(lambda p: p.GetAttribute("twin:x:role").Set("bogus"), id="bad-role"),
        pytest.param(lambda p: (p.GetAttribute("twin:x:min").Set(5.0)), id="min-above-max"),
        pytest.param(lambda p: p.GetAttribute("twin:x").Set(math.inf), id="infinite"),
        pytest.param(lambda p: p.AddAppliedSchema("TwinStateAPI:missing"), id="no-value-attribute"),
        pytest.param(lambda p: (p.AddAppliedSchema("TwinStateAPI:s"), p.CreateAttribute("twin:s", Sdf.ValueTypeNames.String).Set("x")), id="unsupported-type"),
        pytest.param(lambda p: p.GetAttribute("twin:x").Block(), id="value-block"),
    ],
)
def test_bad_declarations_raise_the_same_schema_error(tmp_path, author):
    stage = _stage_with(tmp_path, author)
    with pytest.raises(SchemaError) as want:
        _reference(stage)
    for cache in (False, tmp_path / "c", tmp_path / "c"):
        with pytest.raises(SchemaError) as got:
            read_twin(stage, cache=cache)
        assert str(got.value) == str(want.value)
        assert "/W/A.twin:" in str(got.value)


def test_time_samples_without_default_behave_as_before(tmp_path):
    def author(p):
        a = p.CreateAttribute("twin:y", Sdf.ValueTypeNames.Double)
        p.AddAppliedSchema("TwinStateAPI:y")
        a.Set(1.0, 1.0)

    stage = _stage_with(tmp_path, author)
    with pytest.raises(Exception) as want:
        _reference(stage)
    with pytest.raises(type(want.value)):
        read_twin(stage, cache=False)


def test_usd_wg_assets_read_the_same(shared_data, tmp_path):
    """Real third-party files: no twin prims of their own, and the same twin once declared on top."""
    files = sorted(p for p in (shared_data / "usd-wg").rglob("*") if p.suffix in (".usda", ".usdc", ".usd", ".usdz"))[:12]
    assert files
    for f in files:
        try:
            stage = open_stage(f)
        except Exception:  # noqa: BLE001 - some test assets are deliberately broken
            continue
        _same(stage, tmp_path / "cache")
        # declare twin assets on the file's top prims through a layer on top
        over = Usd.Stage.Open(stage.GetRootLayer(), Sdf.Layer.CreateAnonymous())
        over.SetEditTarget(over.GetSessionLayer())
        for i, prim in enumerate(p for p in over.GetPseudoRoot().GetChildren() if p.IsDefined() and not p.IsAbstract()):
            declare_asset(prim, kind="part", asset_id=f"{f.stem}-{i}")
            declare_attribute(prim, "temperature", "float", 20.0 + i, unit="degC")
        _same(over, tmp_path / "cache")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    decls=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["float", "int", "bool", "vec3"]),
            st.sampled_from(["m", "degC", "1", "bar"]),
            st.sampled_from(["state", "input", "parameter", "measured"]),
            st.floats(-1e6, 1e6),
        ),
        min_size=0,
        max_size=6,
    ),
    n=st.integers(1, 4),
)
@pytest.mark.parametrize("suffix", [".usda", ".usdc"])  # .usdc: the crate reader's columns (tests/test_crate.py)
def test_random_declarations(tmp_path_factory, decls, n, suffix):
    d = tmp_path_factory.mktemp("rand")
    stage = create_stage(d / f"r{suffix}", root="W")
    for i in range(n):
        prim = stage.DefinePrim(f"/W/A{i}", "Xform")
        declare_asset(prim, kind="k", asset_id=str(i), model="" if i % 2 else "thermal")
        for name, type_, unit, role, x in decls:
            if prim.HasAttribute(f"twin:{name}"):
                continue
            value = {"float": x, "int": int(x), "bool": x > 0, "vec3": (x, -x, 0.5)}[type_]
            declare_attribute(prim, name, type_, value, unit=unit, role=role, description=f"{name} of {i}")
    stage.GetRootLayer().Save()
    _same(open_stage(d / f"r{suffix}"), d / "cache")
    if suffix == ".usdc":
        assert read_twin(open_stage(d / f"r{suffix}"), cache=False).stats["crate"] == "read"


# -- the whole description, cached per stage ---------------------------------------------


def test_a_warm_open_is_served_from_the_stage_description(factory_1k, tmp_path):
    stage = open_stage(factory_1k)
    want = _reference(stage)
    cache = tmp_path / "cache"
    assert "description_cached" not in read_twin(stage, cache=cache).stats  # primes it
    again = open_stage(factory_1k)
    got = read_twin(again, cache=cache)
    assert got.stats.get("description_cached") is True
    assert (got.assets, got.declarations) == want
    # opened another way (payloads unloaded): another key, read afresh
    assert _readcache.Cache(cache).stage_key(open_stage(factory_1k, load="none"), {}) != _readcache.Cache(cache).stage_key(again, {})


def test_an_edited_session_layer_or_anonymous_sublayer_is_not_served_from_the_description(pump_scene, tmp_path):
    cache = tmp_path / "cache"
    read_twin(open_stage(pump_scene), cache=cache)
    stage = open_stage(pump_scene)
    assert _readcache.Cache(cache).stage_key(stage, {}) is not None
    stage.SetEditTarget(stage.GetSessionLayer())
    stage.GetPrimAtPath("/Testbed/Valve1").GetAttribute("twin:opening").Set(0.125)
    assert _readcache.Cache(cache).stage_key(stage, {}) is None
    got = read_twin(stage, cache=cache)
    assert "description_cached" not in got.stats
    assert {(d.prim, d.name): d.value for d in got.declarations}[("/Testbed/Valve1", "opening")] == 0.125
    other = open_stage(pump_scene)
    other.GetSessionLayer().subLayerPaths.append(Sdf.Layer.CreateAnonymous().identifier)
    assert _readcache.Cache(cache).stage_key(other, {}) is None


def test_a_twin_open_with_its_live_layer_is_served_warm(factory_1k, tmp_path):
    cache = tmp_path / "cache"
    keys = _readcache.Cache(cache)
    stage, live = open_live_stage(factory_1k)  # what twinstage.open opens
    want = _reference(stage)
    assert keys.stage_key(stage, {}) == keys.stage_key(open_stage(factory_1k), {})  # the fresh live layer changes nothing
    assert read_twin(stage, cache=cache).stats["crate"] == "read"  # cold: primes the description
    again, _ = open_live_stage(factory_1k)
    got = read_twin(again, cache=cache)
    assert got.stats.get("description_cached") is True
    assert (got.assets, got.declarations) == want


@pytest.mark.parametrize("opinion", ["attribute", "def", "metadata"])
def test_a_live_layer_with_an_opinion_is_not_served_from_the_description(pump_scene, tmp_path, opinion):
    cache = tmp_path / "cache"
    stage, live = open_live_stage(pump_scene)
    read_twin(stage, cache=cache)
    assert _readcache.Cache(cache).stage_key(stage, {}) is not None
    spec = Sdf.CreatePrimInLayer(live, "/Testbed/Valve1")
    if opinion == "attribute":
        Sdf.AttributeSpec(spec, "twin:opening", Sdf.ValueTypeNames.Double).default = 0.125
    elif opinion == "def":
        Sdf.CreatePrimInLayer(live, "/Testbed/Extra").specifier = Sdf.SpecifierDef
    else:
        spec.active = False
    assert _readcache.Cache(cache).stage_key(stage, {}) is None
    got = read_twin(stage, cache=cache)
    assert "description_cached" not in got.stats
    assert (got.assets, got.declarations) == _reference(stage)
    values = {(d.prim, d.name): d.value for d in got.declarations}
    if opinion == "attribute":
        assert values[("/Testbed/Valve1", "opening")] == 0.125
    elif opinion == "metadata":
        assert "/Testbed/Valve1" not in {a.path for a in got.assets}


def test_a_malformed_or_wrong_description_entry_is_a_miss(pump_scene, tmp_path):
    stage = open_stage(pump_scene)
    want = _reference(stage)
    cache = _readcache.Cache(tmp_path / "cache")
    read_twin(stage, cache=cache.folder)
    key = cache.stage_key(stage, {})
    good = cache.load(key)
    assert good and len(good["paths"]) == len(want[0])
    wrong_value = dict(good, decl_value=[(v + 1 if isinstance(v, float) else v) for v in good["decl_value"]])
    missing_decl = dict(good, decl_prim=good["decl_prim"][:-1], decl_template=good["decl_template"][:-1], decl_value=good["decl_value"][:-1])
    n = len(good["decl_value"])
    hostile = (dict(good, decl_prim=[10**9] * n), dict(good, decl_prim=[-1] * n), dict(good, decl_value=[{"a": 1}] * n),
               dict(good, templates=[("x", "float", "", "0", 1.0, "state", "", "")] * len(good["templates"])),
               dict(good, templates=[("x", "str", "", 0.0, 1.0, "state", "", "")] * len(good["templates"])))
    for bad in (wrong_value, missing_decl, dict(good, fields=[[], [], []]), dict(good, paths=[1] * len(good["paths"])), dict(good, templates=[("x",)]), *hostile):
        cache.store(key, bad)
        got = read_twin(stage, cache=cache.folder)
        assert "description_cached" not in got.stats
        assert (got.assets, got.declarations) == want
    assert read_twin(stage, cache=cache.folder).stats.get("description_cached") is True  # re-stored the right one
