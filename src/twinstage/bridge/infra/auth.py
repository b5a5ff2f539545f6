"""Tokens with roles, the Origin allow-list, rate limits and log redaction.

A token is ``NAME:ROLE:SECRET``; the secret is what a client presents (by the
``Authorization: Bearer`` header, ``?token=``, or an ``auth`` first message from a
browser). Secrets are compared in constant time and never logged: every record
of the websockets logger passes through :class:`RedactFilter`.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import parse_qs, urlsplit

# the roles: as in ``_messages.ROLES`` (a test checks); not imported from there so that the
# Python client, which needs only ``redacting_logger``, does not import pydantic (0.28 s per process)
ROLES = ("viewer", "operator", "admin", "ingest")

RANK = {"viewer": 0, "ingest": 0, "operator": 1, "admin": 2}  # ingest: a viewer that may also push telemetry


class AuthError(ValueError):
    pass


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise AuthError(f"token {self.name!r}: role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if not self.name or not re.fullmatch(r"[A-Za-z0-9_.@-]+", self.name):
            raise AuthError(f"token name {self.name!r}: use letters, digits and _.@- only")
        if len(self.secret) < 8:
            raise AuthError(f"token {self.name!r}: the secret must be at least 8 characters")

    @classmethod
    def parse(cls, spec: str) -> "Token":
        """``NAME:ROLE:SECRET`` (the secret may contain ':')."""
        name, sep, rest = spec.partition(":")
        role, sep2, secret = rest.partition(":")
        if not sep or not sep2:
            raise AuthError("a token is NAME:ROLE:SECRET")
        return cls(name.strip(), role.strip(), secret.strip())


def load_tokens(path: str | os.PathLike[str]) -> list[Token]:
    """A tokens file: one ``NAME:ROLE:SECRET`` per line; blank lines and ``#`` comments ignored."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(Token.parse(line))
        except AuthError as exc:
            raise AuthError(f"{path}:{n}: {exc}") from None
    return out


class Auth:
    """Token lookup. ``anonymous``: the role of a connection without a token (None: refused)."""

    def __init__(self, tokens: Iterable[Token | str] = (), anonymous: str | None = "default"):
        self.tokens = [t if isinstance(t, Token) else Token.parse(t) for t in tokens]
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise AuthError("two tokens share a name")
        if anonymous == "default":
            anonymous = None if self.tokens else "viewer"
        if anonymous is not None and anonymous not in ROLES:
            raise AuthError(f"anonymous role must be one of {', '.join(ROLES)} or None")
        self.anonymous = anonymous

    def check(self, secret: str) -> Token | None:
        found = None
        for t in self.tokens:  # no early exit: constant time over the token list
            if hmac.compare_digest(t.secret.encode(), secret.encode()):
                found = t
        return found

    @staticmethod
    def from_request(path: str, headers: object) -> str | None:
        """The token a handshake carries (header first, then ``?token=``), or None."""
        h = headers.get("Authorization") if hasattr(headers, "get") else None  # type: ignore[attr-defined]
        if h:
            scheme, _, value = h.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
        q = parse_qs(urlsplit(path).query)
        if q.get("token"):
            return q["token"][0]
        return None


def origin_allowed(origin: str | None, allowed: Iterable[str], host: str | None) -> bool:
    """No Origin header (not a browser): allowed. Same origin as the Host: allowed. Else the allow-list ('*' allows any)."""
    if origin is None:
        return True
    allowed = list(allowed)
    if "*" in allowed or origin in allowed:
        return True
    if host:
        netloc = urlsplit(origin).netloc
        if netloc and netloc.lower() == host.lower():
            return True
    return False


class TokenBucket:
    """``rate`` per second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int):
        self.rate = float(rate)
        self.burst = float(burst)
        self.level = float(burst)
        self.t = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.t) * self.rate)
        self.t = now
        if self.level >= 1.0:
            self.level -= 1.0
            return True
        return False


_SECRET_RE = re.compile(r"(token=)[^&\s'\"]+|(Authorization:\s*\w+\s+)\S+|(\"token\"\s*:\s*\")[^\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    return _SECRET_RE.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)


class RedactFilter(logging.Filter):
    """Scrubs ``token=...``, ``Authorization: ...`` and ``"token": "..."`` from log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = redact(str(record.exc_info[1]))
            if text != str(record.exc_info[1]):
                record.exc_info = None
                record.exc_text = None
                record.msg = f"{record.msg} ({text})"
        return True


def redacting_logger(name: str) -> logging.Logger:
    log = logging.getLogger(name)
    if not any(isinstance(f, RedactFilter) for f in log.filters):
        log.addFilter(RedactFilter())
    return log
