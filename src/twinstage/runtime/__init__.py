"""The tick loop: the headless :class:`Engine`, :class:`Twin` (engine + USD writers and
listener), its fixed-step :class:`Clock`, the :class:`Sink` protocol and :class:`SinkContext`."""

from ._clock import Clock
from ._context import SinkContext
from ._engine import Engine, Sink
from ._twin import Twin, open

__all__ = ["Clock", "Engine", "Sink", "SinkContext", "Twin", "open"]
