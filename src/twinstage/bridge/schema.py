"""``python -m twinstage.bridge.schema > docs/protocol.schema.json``: the protocol's JSON Schema,
generated from the pydantic message classes (the single source of truth)."""

from __future__ import annotations

import json
from typing import Any

from . import _binary
from ._messages import CLIENT_TYPES, FOXGLOVE_SUBPROTOCOL, PROTOCOL, SERVER_TYPES, SUBPROTOCOL, VERSION


def protocol_schema() -> dict[str, Any]:
    from pydantic.json_schema import models_json_schema

    models = list(SERVER_TYPES.values()) + list(CLIENT_TYPES.values())
    refs, top = models_json_schema([(m, "validation") for m in models], ref_template="#/$defs/{model}")
    defs = top["$defs"]
    by_name = {m: refs[(m, "validation")]["$ref"] for m in models}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:twinstage:{PROTOCOL}:{VERSION}",
        "title": f"{PROTOCOL} protocol, version {VERSION}",
        "description": (
            f"JSON messages of the twinstage websocket bridge (subprotocol {SUBPROTOCOL!r}; {FOXGLOVE_SUBPROTOCOL!r} selects the Foxglove dialect). "
            "Every message is one of serverMessage (server -> client) or clientMessage (client -> server), told apart by 'type'. "
            "With encoding 'binary', snapshots and deltas come as binary websocket frames instead, laid out as x-binary-frame says."
        ),
        "x-binary-frame": _binary.LAYOUT,
        "x-protocol": PROTOCOL,
        "x-version": VERSION,
        "$defs": {
            **defs,
            "serverMessage": {"oneOf": [{"$ref": by_name[m]} for m in SERVER_TYPES.values()],
                              "discriminator": {"propertyName": "type", "mapping": {k: by_name[m] for k, m in SERVER_TYPES.items()}}},
            "clientMessage": {"oneOf": [{"$ref": by_name[m]} for m in CLIENT_TYPES.values()],
                              "discriminator": {"propertyName": "type", "mapping": {k: by_name[m] for k, m in CLIENT_TYPES.items()}}},
        },
        "oneOf": [{"$ref": "#/$defs/serverMessage"}, {"$ref": "#/$defs/clientMessage"}],
    }


def render() -> str:
    return json.dumps(protocol_schema(), indent=2, sort_keys=False) + "\n"


def main() -> None:
    import sys

    sys.stdout.write(render())


if __name__ == "__main__":
    main()
