"""The protocol itself: generated schema in sync, JsonUtility-friendly shapes, message validation,
the binary frame, and cheap imports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from twinstage.bridge import _binary
from twinstage.bridge._messages import CLIENT_TYPES, SERVER_TYPES, Command, Resume, Set, Subscribe
from twinstage.bridge.schema import protocol_schema, render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_is_the_generated_one():
    committed = (ROOT / "docs" / "protocol.schema.json").read_text()
    assert committed == render(), "docs/protocol.schema.json is stale: run python -m twinstage.bridge.schema > docs/protocol.schema.json"


def test_schema_is_valid_json_schema_and_covers_every_message():
    import jsonschema

    schema = protocol_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    mapping = schema["$defs"]["serverMessage"]["discriminator"]["mapping"] | schema["$defs"]["clientMessage"]["discriminator"]["mapping"]
    assert set(mapping) == set(SERVER_TYPES) | set(CLIENT_TYPES)


def test_protocol_doc_lists_every_message_and_error_code():
    from twinstage.bridge._messages import ERROR_CODES

    doc = (ROOT / "docs" / "protocol.md").read_text()
    for t in list(SERVER_TYPES) + list(CLIENT_TYPES):
        assert f"`{t}`" in doc, f"docs/protocol.md does not describe message type {t!r}"
    for code in ERROR_CODES:
        assert f"`{code}`" in doc, f"docs/protocol.md does not describe error code {code!r}"


def _walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}/{i}")


def test_shapes_are_jsonutility_friendly():
    """Unity's JsonUtility reads objects with fixed fields and arrays of records: no maps keyed by
    data (additionalProperties with a schema), no nulls, no nested arrays."""
    schema = protocol_schema()
    for path, node in _walk(schema["$defs"]):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path}: objects must have fixed fields"
        assert not isinstance(node.get("additionalProperties"), dict), f"{path}: a map keyed by data"
        assert node.get("type") != "null", f"{path}: null is not JsonUtility-friendly"
        if node.get("type") == "array":
            assert node.get("items", {}).get("type") != "array", f"{path}: nested arrays"


def test_client_message_validation():
    ok = Set.model_validate({"type": "set", "id": "1", "prim": "/A", "attribute": "x", "value": 0})
    assert ok.value == 0.0 and isinstance(ok.value, float)  # JSON 0 for a double
    assert Set.model_validate({"type": "set", "id": "1", "prim": "/A", "attribute": "x", "value": True}).value is True
    assert Set.model_validate({"type": "set", "id": "1", "prim": "/A", "attribute": "x", "value": [1, 2, 3.5]}).value == [1.0, 2.0, 3.5]
    for bad in ("0.5", None, [1, 2], [1, "2", 3], math.nan, math.inf, {"v": 1}):
        with pytest.raises(ValidationError):
            Set.model_validate({"type": "set", "id": "1", "prim": "/A", "attribute": "x", "value": bad})
    with pytest.raises(ValidationError):  # ids are required on requests
        Set.model_validate({"type": "set", "id": "", "prim": "/A", "attribute": "x", "value": 1})
    with pytest.raises(ValidationError):  # unknown fields are an error, not silently ignored
        Set.model_validate({"type": "set", "id": "1", "prim": "/A", "atribute": "x", "value": 1})
    # JsonUtility writes every field with its default: "", 0, []
    sub = Subscribe.model_validate({"type": "subscribe", "id": "", "prefixes": [], "attributes": [], "encoding": "binary", "maxRate": 0})
    assert sub.max_rate == 0.0
    with pytest.raises(ValidationError):
        Subscribe.model_validate({"type": "subscribe", "maxRate": True})
    with pytest.raises(ValidationError):
        Subscribe.model_validate({"type": "subscribe", "encoding": "xml"})
    assert Resume.model_validate({"type": "resume", "session": "s", "lastSeq": 5.0}).last_seq == 5
    with pytest.raises(ValidationError):
        Resume.model_validate({"type": "resume", "session": "s", "lastSeq": 5.5})
    assert Command.model_validate({"type": "command", "id": "c", "command": "step", "steps": 3}).steps == 3
    with pytest.raises(ValidationError):
        Command.model_validate({"type": "command", "id": "c", "command": "step", "steps": False})


arrays = st.integers(0, 40)


@settings(max_examples=60, deadline=None)
@given(n=arrays, m=arrays, seq=st.integers(0, 2**63 - 1), merged=st.integers(1, 70000), seed=st.integers(0, 2**32 - 1))
def test_binary_frame_round_trip(n, m, seq, merged, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 2**32 - 1, n, dtype=np.uint64).astype(np.int64)
    vals = rng.normal(size=n) * 1e6
    q = rng.integers(0, 32, n).astype(np.uint8)
    vidx = rng.integers(0, 2**31, m)
    vv = rng.normal(size=(m, 3))
    vq = rng.integers(0, 32, m).astype(np.uint8)
    data = _binary.encode(_binary.DELTA, seq, seq // 3, 1.25, 1700000000.5, idx, vals, q, vidx, vv, vq, merged=merged)
    assert len(data) == 48 + 13 * n + 29 * m
    assert data[:4] == b"TWB1"
    f = _binary.decode(data)
    assert (f.kind, f.seq, f.tick, f.sim_time, f.wall_time, f.merged) == ("delta", seq, seq // 3, 1.25, 1700000000.5, min(merged, 65535))
    np.testing.assert_array_equal(f.indices, idx)
    np.testing.assert_array_equal(f.values, vals)
    np.testing.assert_array_equal(f.quality, q)
    np.testing.assert_array_equal(f.vec3_indices, vidx)
    np.testing.assert_array_equal(f.vec3_values, vv)
    np.testing.assert_array_equal(f.vec3_quality, vq)
    assert _binary.peek(data) == (seq, seq // 3, 1700000000.5)


def test_binary_frame_rejects_garbage():
    good = _binary.encode(_binary.SNAPSHOT, 1, 1, 0.0, 0.0, np.arange(3), np.ones(3), np.zeros(3, np.uint8), np.zeros(0, int), np.zeros((0, 3)),
                          np.zeros(0, np.uint8), reason="behind")
    assert _binary.decode(good).reason == "behind"
    for bad in (b"", good[:47], b"XXXX" + good[4:], good + b"\0", good[:-1]):
        with pytest.raises(_binary.BinaryFormatError):
            _binary.decode(bad)


def test_layout_doc_matches_the_header_struct():
    offsets = [h["offset"] for h in _binary.LAYOUT["header"]]
    assert offsets == sorted(offsets) and _binary.HEADER_SIZE == 48
    assert json.loads(json.dumps(_binary.LAYOUT)) == _binary.LAYOUT


def test_importing_the_bridge_is_cheap():
    code = "import sys, twinstage, twinstage.bridge; bad = [m for m in ('websockets', 'pydantic', 'pxr', 'numpy') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
