"""The factory generator: ``write_factory`` (no stage opened) and area sublayers that compose to the
same factory as one layer."""

from __future__ import annotations

import numpy as np
import pytest
from pxr import Sdf, Usd

import twinstage
from twinstage.scenes import generate_factory
from twinstage.scenes._factory import write_factory
from twinstage.usd import read_twin


def _prims(stage: Usd.Stage) -> list[tuple]:
    """Every prim (classes included) with its type, specifier, metadata and attribute values, in order."""
    out = []
    for p in Usd.PrimRange.Stage(stage, Usd.PrimAllPrimsPredicate):
        meta = {k: str(v) for k, v in p.GetAllMetadata().items() if k != "documentation"}
        attrs = {a.GetName(): (str(a.GetTypeName()), a.GetVariability(), a.Get()) for a in p.GetAttributes()}
        out.append((str(p.GetPath()), p.GetTypeName(), p.GetSpecifier(), repr(sorted(meta.items())), repr(sorted(attrs.items()))))
    return out


@pytest.mark.parametrize("n, area, items", [(250, 100, 30), (7, 3, 0), (10, 10, 0)])
def test_areas_compose_to_the_same_factory(tmp_path, n, area, items):
    one = generate_factory(n, tmp_path / "one.usdc", items=items)
    split = generate_factory(n, tmp_path / "split.usdc", items=items, area_size=area)
    areas = sorted((tmp_path / "split.areas").glob("*.usdc")) if n > area else []
    assert len(areas) == (-(-n // area) if n > area else 0)
    assert len(split.GetLayerStack(includeSessionLayers=False)) == 1 + len(areas)
    if areas:  # the machines live in the areas, nothing else does
        for a in areas:
            layer = Sdf.Layer.FindOrOpen(str(a))
            names = list(layer.GetPrimAtPath("/Factory/Machines").nameChildren.keys())
            assert 0 < len(names) <= area and layer.GetPrimAtPath("/Factory").specifier == Sdf.SpecifierOver
        assert not Sdf.Layer.FindOrOpen(str(tmp_path / "split.usdc")).GetPrimAtPath("/Factory/Machines").nameChildren
    # same prims, in the same order, with the same values (the machines' order included)
    assert sorted(_prims(one)) == sorted(_prims(split))
    order = lambda s: [str(p.GetPath()) for p in s.Traverse()]  # noqa: E731
    assert order(one) == order(split)
    a, b = read_twin(one, cache=False), read_twin(split, cache=False)
    assert a.assets == b.assets and list(a.declarations) == list(b.declarations)
    t1, t2 = twinstage.open(tmp_path / "one.usdc"), twinstage.open(tmp_path / "split.usdc")
    try:
        assert t1.table.prims == t2.table.prims
        for name in t1.table.channels:
            np.testing.assert_array_equal(t1.table[name], t2.table[name])
        t1.tick(), t2.tick()
        np.testing.assert_array_equal(t1.table["temperature"], t2.table["temperature"])
    finally:
        t1.close(), t2.close()


def test_write_factory_writes_what_generate_opens(tmp_path):
    p = write_factory(40, tmp_path / "f.usda", items=5, seed=3)
    assert p == tmp_path / "f.usda"
    text = Sdf.Layer.FindOrOpen(str(p)).ExportToString()
    assert text == generate_factory(40, None, items=5, seed=3).GetRootLayer().ExportToString()
    assert "M39" in text and "L0I4" in text


def test_bad_arguments_name_what_was_wrong(tmp_path):
    with pytest.raises(ValueError, match="area_size must be >= 1"):
        write_factory(10, tmp_path / "f.usdc", area_size=0)
    with pytest.raises(ValueError, match="area_size needs a path"):
        generate_factory(10, area_size=5)
    with pytest.raises(ValueError, match="assets and items"):
        write_factory(-1, tmp_path / "f.usdc")
