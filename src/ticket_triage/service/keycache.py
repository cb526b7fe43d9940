"""A short cache of API-key lookups: a key is checked on every request.

A key revoked in the database (`triage apikey revoke`, any process) stops working on every
replica within `ttl_s` (settings.api_key_cache_s, default 10 s; 0 turns the cache off). Known
revoked keys are cached too, so they are refused without a query.
"""

from __future__ import annotations

import time

MAX_ENTRIES = 10_000  # past this the cache is emptied: bounded memory whatever keys are tried


class KeyCache:
    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, object]] = {}

    def get(self, key_hash: str):
        """The principal cached for `key_hash`, or None when absent or expired."""
        hit = self._entries.get(key_hash)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def put(self, key_hash: str, principal) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) > MAX_ENTRIES:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self.ttl_s, principal)
