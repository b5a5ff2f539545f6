"""The tick loop: :class:`Twin`, its fixed-step :class:`Clock` and the :class:`Sink` protocol."""

from ._clock import Clock
from ._twin import Sink, Twin, open

__all__ = ["Clock", "Sink", "Twin", "open"]
