"""Bridge transport: the listener (handshake, static files), sessions, the sender (deadline,
drain, latest-wins), and auth (tokens, roles, Origins, rate limits, log redaction)."""
