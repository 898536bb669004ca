"""
Who a request comes from, and the cache of what the Hub said about each token.

Pure: the clock is a function passed in. A token is never kept, only its SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import OrderedDict
from typing import Callable

import attrs

INVALID_TOKEN_MAX_AGE = 10.0  # seconds a token the Hub refused is refused without asking
MAX_CACHED_IDENTITIES = 10_000


@attrs.frozen
class Identity:
    """A user or service the Hub vouched for (the model of C{GET /hub/api/user})."""

    name: str
    kind: str = "user"
    admin: bool = False
    groups: tuple[str, ...] = ()
    scopes: frozenset[str] = frozenset()

    @classmethod
    def from_model(cls, model: dict) -> "Identity":
        return cls(
            name=str(model.get("name", "")),
            kind=str(model.get("kind") or "user"),
            admin=bool(model.get("admin", False)),
            groups=tuple(model.get("groups") or ()),
            scopes=frozenset(model.get("scopes") or ()),
        )

    def describe(self) -> str:
        """C{user alice} or C{service cull}, for messages."""
        return f"{self.kind} {self.name}"

    def as_header(self) -> str:
        """The JSON of C{X-Hubtwist-User}."""
        return json.dumps({"name": self.name, "kind": self.kind, "admin": self.admin,
                           "groups": list(self.groups), "scopes": sorted(self.scopes)},
                          separators=(",", ":"))


@functools.lru_cache(maxsize=4096)  # a sha256 per request otherwise: the same few tokens repeat
def cache_key(token: str, session_id: str = "") -> str:
    """
    Keyed on the Hub session as JupyterHub does: after a Hub logout the session cookie
    changes, so a cached identity of the old session is not reused.
    """
    return f"{session_id}:{hashlib.sha256(token.encode('utf8', 'replace')).hexdigest()}"


@attrs.define
class _Entry:
    identity: Identity | None
    stored: float


UNKNOWN = object()  # the cache knows nothing fresh about the token


class IdentityCache:
    """
    What the Hub said about each token, for C{max_age} seconds (refusals for
    L{INVALID_TOKEN_MAX_AGE}). Expired identities are kept as a fallback while the Hub
    cannot be reached (L{stale}), until the oldest are dropped at C{max_entries}.
    """

    def __init__(self, clock: Callable[[], float], max_age: float = 300.0,
                 invalid_max_age: float = INVALID_TOKEN_MAX_AGE,
                 max_entries: int = MAX_CACHED_IDENTITIES) -> None:
        self._clock = clock
        self.max_age = max_age
        self.invalid_max_age = invalid_max_age
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def fresh(self, key: str):
        """The cached L{Identity}, C{None} for a token the Hub refused, or L{UNKNOWN}."""
        entry = self._entries.get(key)
        if entry is None:
            return UNKNOWN
        age = self._clock() - entry.stored
        limit = self.max_age if entry.identity is not None else self.invalid_max_age
        return entry.identity if 0 <= age < limit else UNKNOWN

    def stale(self, key: str) -> Identity | None:
        """The last identity the Hub confirmed for C{key}, however old (for Hub outages)."""
        entry = self._entries.get(key)
        return entry.identity if entry is not None else None

    def remember(self, key: str, identity: Identity | None) -> None:
        # A refusal replaces a confirmed identity too: a revoked token has no stale fallback.
        self._entries.pop(key, None)
        self._entries[key] = _Entry(identity, self._clock())
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)
