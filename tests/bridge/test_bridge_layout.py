"""The bridge's structure (issue 10): transport in infra/, dialects in dialects/, no import cycle,
no module over ~400 lines, and the public names still importable."""

from __future__ import annotations

from _layout import find_cycle, graph, long_modules


def test_no_import_cycle_and_no_long_module():
    g = graph("twinstage.bridge")
    assert not long_modules("twinstage.bridge")
    cycle = find_cycle(g, "twinstage.bridge")
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    assert {"twinstage.bridge.infra.listener", "twinstage.bridge.infra.session", "twinstage.bridge.infra.sender", "twinstage.bridge.infra.auth",
            "twinstage.bridge.dialects.twinstage", "twinstage.bridge.dialects.foxglove"} <= set(g)


def test_public_api_is_unchanged():
    import twinstage.bridge as b

    for name in b.__all__:
        assert getattr(b, name) is not None, name
    assert b.Server.__module__ == "twinstage.bridge._server" and b.Client.__module__ == "twinstage.bridge._client"
