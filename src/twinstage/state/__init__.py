"""Hot twin state: :class:`StateTable` (numpy SoA) and the immutable per-tick :class:`Frame`."""

from ._frame import Change, Frame, Quality
from ._replica import Replica
from ._table import Channel, Declaration, StateError, StateTable

__all__ = ["Change", "Channel", "Declaration", "Frame", "Quality", "Replica", "StateError", "StateTable"]
