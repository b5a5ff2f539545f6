"""twinstage: a digital twin runtime whose world is an OpenUSD stage.

    import twinstage
    twin = twinstage.open("scenes/pump_testbed.usda")
    twin.set("/Testbed/Valve1", opening=0.4)
    twin.run(ticks=100)
    twin.get("/Testbed/Pump", "flowRate")

Importing this package is cheap: it loads no USD, GPU or network code until a
name below is first used.
"""

from __future__ import annotations

from twinstage._lazy import lazy_names

from ._version import __version__

_LAZY = {
    "open": ("twinstage.runtime", "open"),
    "Twin": ("twinstage.runtime", "Twin"),
    "Engine": ("twinstage.runtime", "Engine"),
    "Clock": ("twinstage.runtime", "Clock"),
    "Frame": ("twinstage.state", "Frame"),
    "StateTable": ("twinstage.state", "StateTable"),
    "Quality": ("twinstage.state", "Quality"),
    "Recording": ("twinstage.usd._recorder", "Recording"),
    "create_stage": ("twinstage.usd", "create_stage"),
    "declare_asset": ("twinstage.usd", "declare_asset"),
    "declare_attribute": ("twinstage.usd", "declare_attribute"),
}

__all__ = ["__version__", *_LAZY]

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
