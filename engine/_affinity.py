"""Session affinity through a router: the headers that name a run's session, and the tokens
a router hands back to pin it.

Most routers hash a header the client sets (vllm-router ``X-Session-ID``, SGLang's model
gateway ``X-SMG-Routing-Key``, production-stack the header named by ``--session-key``); the
flavor names its default and the engine's ``affinity_headers=`` replaces it. llm-d's
scheduler works the other way round: it picks a pod for a session's first request, names it
in an ``x-session-token`` response header, and routes later requests that echo the token to
the same pod. :class:`SessionTokens` keeps those tokens per session id, in a bounded LRU, so
a long-lived engine serving many runs does not grow without end.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from harmony_agent.errors import ConfigurationError

__all__ = ["LLM_D_SESSION_HEADER", "SessionTokens", "check_header_names"]

#: the response header llm-d's session-affinity scorer sets (and reads back)
LLM_D_SESSION_HEADER = "x-session-token"

#: sessions whose router token is remembered; the least recently used is forgotten first
MAX_SESSIONS = 4096

_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def check_header_names(names: object, setting: str) -> tuple[str, ...]:
    """``names`` as a tuple of HTTP header names, or a ConfigurationError saying what is wrong."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigurationError(
            f"{setting} must be a list of header names, e.g. ['X-Session-ID'] (or () for "
            f"none), got {names!r}"
        )
    for name in names:
        if not isinstance(name, str) or not name or not set(name) <= _TOKEN_CHARS:
            raise ConfigurationError(
                f"{setting} holds {name!r}, which is not an HTTP header name (letters, digits "
                "and -, e.g. X-Session-ID)"
            )
    return tuple(names)


class SessionTokens:
    """The token a router sent back for each session (its first response's header), echoed
    on that session's later requests; at most ``limit`` sessions are remembered."""

    def __init__(self, header: str, limit: int = MAX_SESSIONS) -> None:
        self.header = header
        self.limit = limit
        self._tokens: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()  # engines may be shared across threads' event loops

    def __len__(self) -> int:
        return len(self._tokens)

    def headers(self, session_id: str | None) -> dict[str, str]:
        """The header to send for ``session_id``: its token, once a response has named one."""
        if not session_id:
            return {}
        with self._lock:
            token = self._tokens.get(session_id)
            if token is None:
                return {}
            self._tokens.move_to_end(session_id)
        return {self.header: token}

    def remember(self, session_id: str | None, token: str | None) -> None:
        """Keep the token a response named for ``session_id`` (the router may move a session:
        the latest token wins)."""
        if not session_id or not token:
            return
        with self._lock:
            self._tokens[session_id] = token
            self._tokens.move_to_end(session_id)
            while len(self._tokens) > self.limit:
                self._tokens.popitem(last=False)
