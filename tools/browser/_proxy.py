"""The browser's only way out: an HTTP proxy on 127.0.0.1 that applies the URL policy to every
connection Chromium opens.

Each run's browser context is configured with this proxy and ``<-loopback>`` (so loopback goes
through it too), and Chromium resolves no names itself, so everything a page can start —
navigations, sub-resources, workers, WebSockets, beacons, prefetches, TURN over TCP — arrives
here first: plain HTTP as an absolute-URL request, the rest as ``CONNECT host:port``. The
proxy checks the target, connects to the addresses the policy approved (never a fresh lookup),
and refuses everything else with a 403 before any byte reaches the target. Plain HTTP
connections carry one request each, so every redirect hop is a new, checked request; the
proxy also counts those hops and refuses the one past the limit.

The proxy runs on its own event loop in a worker thread (an anyio blocking portal) for the
run's lifetime, so it keeps serving while the run's loop is busy and stops when the run ends.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator

import ada_url
import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.abc import (
    ByteReceiveStream,
    ByteSendStream,
    SocketAttribute,
    SocketListener,
    SocketStream,
    TaskStatus,
)
from anyio.streams.buffered import BufferedByteReceiveStream

from ._policy import PolicyViolation, Target, UrlPolicy

__all__ = ["POLICY_HEADER", "EgressProxy"]

POLICY_HEADER = "x-harmony-agent-policy"  # on the proxy's own refusals: the rule that refused
_HEAD_LIMIT = 64 * 1024
_HEAD_TIMEOUT = 30.0
_HOP_HEADERS = {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te"}


class EgressProxy:
    """Serves one run's browser context; ``blocked`` lists what it refused (newest last)."""

    def __init__(
        self, policy: UrlPolicy, *, connect_timeout: float = 20.0, max_redirects: int = 10
    ) -> None:
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.max_redirects = max_redirects
        self.blocked: list[PolicyViolation] = []
        self._hops: dict[str, int] = {}  # URL a redirect pointed to -> hops taken to get there
        self._lock = threading.Lock()

    def new_navigation(self) -> None:
        """Forget earlier refusals and redirect chains (called before each ``open``)."""
        with self._lock:
            self.blocked.clear()
            self._hops.clear()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve on 127.0.0.1 (in a worker thread) until exit; yields the proxy's URL."""
        portal_cm = anyio.from_thread.start_blocking_portal()
        portal = await anyio.to_thread.run_sync(portal_cm.__enter__)
        try:
            future, port = await anyio.to_thread.run_sync(portal.start_task, self._serve)
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                future.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(portal_cm.__exit__, None, None, None)

    async def _serve(self, *, task_status: TaskStatus[int]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        # Our own accept loop, not listener.serve: a connection accepted as the proxy is
        # stopped may have a handler task that is cancelled before it ever runs, and its
        # socket must still be closed (by the finally below).
        clients: set[SocketStream] = set()
        try:
            async with listener, anyio.create_task_group() as tg:
                task_status.started(listener.extra(SocketAttribute.local_port))
                (socket_listener,) = listener.listeners  # one address: 127.0.0.1
                assert isinstance(socket_listener, SocketListener)
                while True:
                    client = await socket_listener.accept()
                    clients.add(client)
                    tg.start_soon(self._handle, client, clients)
        finally:
            with anyio.CancelScope(shield=True):
                for client in clients:
                    await client.aclose()

    async def _handle(self, client: SocketStream, clients: set[SocketStream]) -> None:
        try:
            async with client:
                await self._serve_one(client)
        except Exception:
            pass
        finally:
            clients.discard(client)

    def record(self, violation: PolicyViolation) -> None:
        """Note a refusal (the proxy's own, or one made in front of it)."""
        with self._lock:
            self.blocked.append(violation)

    def _refuse(self, violation: PolicyViolation) -> bytes:
        self.record(violation)
        body = f"harmony-agent refused this request: {violation}\n".encode()
        head = (
            "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\n{POLICY_HEADER}: {violation.rule}\r\n"
            "connection: close\r\nproxy-connection: close\r\n\r\n"
        )
        return head.encode() + body

    async def _check(self, url: str, *, authority: bool) -> Target:
        check = self.policy.check_authority if authority else self.policy.check
        target = await anyio.to_thread.run_sync(check, url)
        with self._lock:
            hops = self._hops.get(target.url)
        if hops is not None and hops > self.max_redirects:
            raise PolicyViolation(
                target.url,
                "max_redirects",
                f"{hops} redirects (the limit is {self.max_redirects})",
            )
        return target

    async def _connect(self, target: Target) -> SocketStream:
        error: Exception | None = None
        with anyio.fail_after(self.connect_timeout):
            for address in target.addresses:
                try:
                    return await anyio.connect_tcp(address, target.port)
                except OSError as exc:
                    error = exc
        raise error or OSError(f"no address to connect to for {target.host}")

    async def _serve_one(self, client: SocketStream) -> None:
        reader = BufferedByteReceiveStream(client)
        with anyio.fail_after(_HEAD_TIMEOUT):
            head = await reader.receive_until(b"\r\n\r\n", _HEAD_LIMIT)
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target_text, version = request_line.split(" ", 2)
        connect = method.upper() == "CONNECT"
        try:
            target = await self._check(target_text, authority=connect)
        except PolicyViolation as violation:
            await client.send(self._refuse(violation))
            return
        try:
            upstream = await self._connect(target)
        except (OSError, TimeoutError) as exc:
            body = f"harmony-agent could not connect to {target.host}: {exc}\n".encode()
            await client.send(
                b"HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            return
        async with upstream:
            if connect:
                await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await _relay_both(reader, client, upstream, BufferedByteReceiveStream(upstream))
                return
            url = ada_url.URL(target.url)
            kept = [
                h for h in lines if h and h.split(":", 1)[0].strip().lower() not in _HOP_HEADERS
            ]
            request = "\r\n".join(
                [f"{method} {url.pathname}{url.search} {version}", *kept, "connection: close"]
            )
            await upstream.send(request.encode("latin-1") + b"\r\n\r\n")
            response = BufferedByteReceiveStream(upstream)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_relay, reader, upstream)
                await self._relay_response(response, client, target)
                tg.cancel_scope.cancel()

    async def _relay_response(
        self, response: BufferedByteReceiveStream, client: SocketStream, target: Target
    ) -> None:
        head = await response.receive_until(b"\r\n\r\n", _HEAD_LIMIT)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = status_line.split(" ", 2)[1] if status_line.count(" ") else ""
        kept = []
        for line in lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "location" and status.startswith("3"):
                self._note_redirect(target.url, value.strip())
            if name.strip().lower() not in _HOP_HEADERS:
                kept.append(line)
        if status != "101":
            kept += ["connection: close", "proxy-connection: close"]
        await client.send("\r\n".join([status_line, *kept]).encode("latin-1") + b"\r\n\r\n")
        await _relay(response, client)

    def _note_redirect(self, source: str, location: str) -> None:
        try:
            following = ada_url.join_url(source, location)
        except ValueError:
            return  # Chromium will not follow it either
        with self._lock:
            self._hops[following] = self._hops.get(source, 0) + 1


async def _relay(source: ByteReceiveStream, sink: ByteSendStream) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        async for chunk in source:
            await sink.send(chunk)


async def _relay_both(
    client_in: ByteReceiveStream,
    client_out: ByteSendStream,
    upstream_out: ByteSendStream,
    upstream_in: ByteReceiveStream,
) -> None:
    """A tunnel: bytes both ways until either side closes."""
    async with anyio.create_task_group() as tg:

        async def one_way(source: ByteReceiveStream, sink: ByteSendStream) -> None:
            await _relay(source, sink)
            tg.cancel_scope.cancel()

        tg.start_soon(one_way, client_in, upstream_out)
        tg.start_soon(one_way, upstream_in, client_out)
