"""The websocket bridge: live twin state to Unity, Omniverse, browsers and Foxglove.

::

    import twinstage
    from twinstage.bridge import serve

    twin = twinstage.open("scenes/pump_testbed.usda", rate=10, realtime=True)
    server = serve(twin, port=8765, tokens=["ops:operator:a-long-secret"])
    twin.run(duration=60, wait_when_paused=True)

The protocol is in ``docs/protocol.md``; its messages are the pydantic classes
exported here (the single source of truth; ``python -m twinstage.bridge.schema``
prints their JSON Schema). Importing this package loads neither websockets nor
pydantic: they load when a name below is first used.
"""

from __future__ import annotations

from twinstage._lazy import lazy_names

_LAZY = {
    "Server": "._server",
    "serve": "._server",
    "FanoutHub": "._fanout",  # serve --fanout-procs: the twin's sink that feeds worker processes
    "Client": "._client",
    "BridgeError": "._client",
    "Token": ".infra.auth",
    "AuthError": ".infra.auth",
    "load_tokens": ".infra.auth",
    "decode_binary": ("._binary", "decode"),
    "BinaryFrame": "._binary",
    "PROTOCOL": "._messages",
    "VERSION": "._messages",
    "SUBPROTOCOL": "._messages",
    "FOXGLOVE_SUBPROTOCOL": "._messages",
    "Hello": "._messages",
    "Snapshot": "._messages",
    "Delta": "._messages",
    "Structure": "._messages",
    "Alarm": "._messages",
    "Event": "._messages",
    "Error": "._messages",
    "Ack": "._messages",
    "Auth": "._messages",
    "Subscribe": "._messages",
    "Resume": "._messages",
    "Set": "._messages",
    "Command": "._messages",
    "AttributeInfo": "._messages",
    "PrimInfo": "._messages",
    "ServerMessage": "._messages",
    "ClientMessage": "._messages",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
