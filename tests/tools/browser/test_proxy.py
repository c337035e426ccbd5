"""The egress proxy on its own (no Chromium): what it relays, what it refuses before connecting,
and that it connects to the addresses the policy approved, not to a fresh lookup."""

from __future__ import annotations

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from harmony_agent.tools.browser._policy import UrlPolicy
from harmony_agent.tools.browser._proxy import POLICY_HEADER, EgressProxy

pytestmark = pytest.mark.anyio


async def exchange(proxy_url: str, data: bytes, then: bytes = b"") -> bytes:
    """Send ``data`` to the proxy; after its first reply head, send ``then``; read to the end."""
    host, port = proxy_url.removeprefix("http://").split(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(data)
        reader = BufferedByteReceiveStream(stream)
        head = await reader.receive_until(b"\r\n\r\n", 65536) + b"\r\n\r\n"
        if then:
            await stream.send(then)
        rest = b""
        with anyio.fail_after(10):
            try:
                async for chunk in reader:
                    rest += chunk
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        return head + rest


async def test_plain_requests_and_tunnels_to_allowed_hosts_are_relayed(site):
    base, _ = site
    authority = base.removeprefix("http://")
    proxy = EgressProxy(UrlPolicy(private_exceptions=("127.0.0.1",)))
    async with proxy.running() as url:
        reply = await exchange(
            url, f"GET {base}/table.html HTTP/1.1\r\nhost: {authority}\r\n\r\n".encode()
        )
        assert reply.startswith(b"HTTP/1.0 200") and b"Rainfall" in reply
        assert b"connection: close" in reply.lower()
        request = f"GET /article.html HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n"
        tunnel = await exchange(
            url,
            f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n\r\n".encode(),
            request.encode(),
        )
        assert tunnel.startswith(b"HTTP/1.1 200 Connection established") and b"An article" in tunnel
    assert proxy.blocked == []


async def test_refused_targets_get_a_403_and_no_connection(site, blocked_base):
    _, hits = site
    hits["blocked"].clear()
    authority = blocked_base.removeprefix("http://")
    proxy = EgressProxy(UrlPolicy(private_exceptions=("127.0.0.1",)))
    async with proxy.running() as url:
        for request in (
            f"GET {blocked_base}/x HTTP/1.1\r\nhost: {authority}\r\n\r\n",
            f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n\r\n",
            "GET /relative HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",  # not a proxy request
        ):
            reply = await exchange(url, request.encode())
            assert reply.startswith(b"HTTP/1.1 403") and POLICY_HEADER.encode() in reply, reply
    assert [v.rule for v in proxy.blocked] == ["private_network", "private_network", "url"]
    assert hits["blocked"] == []


async def test_the_proxy_connects_to_the_checked_address(site):
    """A name the system cannot resolve works through the policy's own resolver: the proxy
    connects to the address the check approved (no second lookup that could answer otherwise)."""
    base, _ = site
    port = base.rsplit(":", 1)[1]
    policy = UrlPolicy(private_exceptions=("site.test",), resolver=lambda host: ["127.0.0.1"])
    async with EgressProxy(policy).running() as url:
        reply = await exchange(
            url,
            f"GET http://site.test:{port}/table.html HTTP/1.1\r\nhost: site.test:{port}\r\n\r\n".encode(),
        )
    assert reply.startswith(b"HTTP/1.0 200") and b"Rainfall" in reply


async def test_redirect_hops_past_the_limit_are_refused(site):
    base, _ = site
    authority = base.removeprefix("http://")
    proxy = EgressProxy(UrlPolicy(private_exceptions=("127.0.0.1",)), max_redirects=1)
    async with proxy.running() as url:
        proxy.new_navigation()
        replies = []
        for n in (5, 4, 3):
            request = f"GET {base}/redirect/{n} HTTP/1.1\r\nhost: {authority}\r\n\r\n"
            replies.append((await exchange(url, request.encode())).split(b"\r\n")[0])
    assert replies[:2] == [b"HTTP/1.0 302 Found"] * 2 and replies[2].startswith(b"HTTP/1.1 403")
    assert [v.rule for v in proxy.blocked] == ["max_redirects"]
