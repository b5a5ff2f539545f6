"""Bridge dialects: ``twinstage`` (the native protocol) and ``foxglove`` (foxglove.websocket.v1)."""
