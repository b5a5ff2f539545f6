"""Hot twin state: :class:`StateTable` (numpy SoA) and the immutable per-tick :class:`Frame`."""

from ._decls import Declaration, DeclarationColumns, StateError
from ._frame import Change, Frame, Quality
from ._replica import Replica
from ._table import Channel, StateTable

__all__ = ["Change", "Channel", "Declaration", "DeclarationColumns", "Frame", "Quality", "Replica", "StateError", "StateTable"]
