"""The two HTTP clients the engine can stream through, behind one small contract.

:class:`AiohttpClient` is the default on asyncio: aiohttp parses HTTP (chunked bodies
included) in C, which measured about five times cheaper per streamed event than httpx's
pure-Python stack (``bench/bench_concurrency.py`` prints the comparison). :class:`HttpxClient`
is used on other event loops (trio) and whenever the caller passes an httpx transport
(``httpx.MockTransport`` in tests, a proxy transport).

A client does three things: :meth:`get` a small JSON body (model discovery), :meth:`post`
a request and hand back its :class:`Answer` once the headers are in, and map its library's
exceptions to ours (:meth:`errors`). Deadlines are the caller's: the client sets only the
connect timeout; every wait for data runs in the caller's cancel scope.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Protocol

import anyio
import anyio.to_thread
import httpx
from harmony_agent.errors import EngineError, EngineTimeoutError, EngineUnavailableError

from ._errors import Retryable, map_transport_errors, with_settings

__all__ = ["AiohttpClient", "Answer", "HttpClient", "HttpxClient", "make_client"]


class Answer(Protocol):
    """A response whose headers have arrived; its body is read as it comes."""

    status: int

    def header(self, name: str) -> str | None: ...

    async def read(self) -> bytes:
        """The next piece of the body as the network delivered it; ``b""`` at its end."""
        ...

    def read_nowait(self) -> bytes:
        """What has arrived and not been read yet, without waiting (``b""``: nothing)."""
        ...

    async def aclose(self) -> None:
        """Done with it: a finished body frees the connection for reuse, an unfinished one
        closes it (which aborts the request on the server)."""


class HttpClient(Protocol):
    async def get(self, url: str, headers: dict[str, str]) -> tuple[int, bytes, str]: ...

    async def post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> Answer: ...

    def errors(self, url: str, sampled: Sequence[int]) -> contextlib.AbstractContextManager: ...

    async def aclose(self) -> None: ...


# --- httpx ---------------------------------------------------------------------------------


class _HttpxAnswer:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code
        self._pieces: AsyncIterator[bytes] | None = None

    def header(self, name: str) -> str | None:
        return self.response.headers.get(name)

    async def read(self) -> bytes:
        if self._pieces is None:
            self._pieces = self.response.aiter_bytes()  # closed with the response
        try:
            return await self._pieces.__anext__()
        except StopAsyncIteration:
            return b""

    def read_nowait(self) -> bytes:
        return b""  # httpx has no such call: every read waits

    async def aclose(self) -> None:
        await self.response.aclose()


class HttpxClient:
    """httpx: any transport, any event loop anyio runs on."""

    def __init__(self, connect_timeout: float, transport: httpx.AsyncBaseTransport | None) -> None:
        # No read timeout of httpx's: the deadlines of the first and next token are ours.
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=None, write=connect_timeout, pool=None
        )
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._lock = anyio.Lock()

    async def _http(self) -> httpx.AsyncClient:
        # Building the client loads the CA bundle (40-60 ms): done in a worker thread, so the
        # first request of many concurrent runs does not stall the event loop. Idle
        # connections are kept as many as were in use, so the next turn of every concurrent
        # run reuses its connection instead of connecting again.
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await anyio.to_thread.run_sync(
                        functools.partial(
                            httpx.AsyncClient,
                            timeout=self._timeout,
                            transport=self._transport,
                            limits=httpx.Limits(
                                max_connections=None, max_keepalive_connections=None
                            ),
                        )
                    )
        return self._client

    async def get(self, url: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        response = await (await self._http()).get(url, headers=headers)
        return response.status_code, response.content, response.headers.get("content-type", "")

    async def post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        client = await self._http()
        request = client.build_request("POST", url, json=body, headers=headers)
        return _HttpxAnswer(await client.send(request, stream=True))

    def errors(self, url: str, sampled: Sequence[int]) -> contextlib.AbstractContextManager:
        return map_transport_errors(url, sampled)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


# --- aiohttp -------------------------------------------------------------------------------


class _AiohttpAnswer:
    def __init__(self, response: Any) -> None:
        self.response = response
        self.status = response.status

    def header(self, name: str) -> str | None:
        return self.response.headers.get(name)

    async def read(self) -> bytes:
        return await self.response.content.readany()

    def read_nowait(self) -> bytes:
        return self.response.content.read_nowait()

    async def aclose(self) -> None:
        if self.response.content.at_eof():
            self.response.release()  # back to the pool
        else:
            self.response.close()  # mid-body: drop the connection, the server aborts


class AiohttpClient:
    """aiohttp on asyncio: a C HTTP parser, the cheapest per streamed event."""

    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self._session: Any = None
        self._loop: Any = None

    def _http(self) -> Any:
        import asyncio

        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # A session belongs to one event loop; a new loop (another anyio.run) gets its own.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=None, sock_connect=self.connect_timeout, sock_read=None
                ),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
            self._loop = loop
        return self._session

    async def get(self, url: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        async with self._http().get(url, headers=headers) as response:
            return response.status, await response.read(), response.headers.get("content-type", "")

    async def post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        data = json.dumps(body).encode()
        response = await self._http().post(
            url, data=data, headers={**headers, "content-type": "application/json"}
        )
        return _AiohttpAnswer(response)

    def errors(self, url: str, sampled: Sequence[int]) -> contextlib.AbstractContextManager:
        return _map_aiohttp_errors(url, sampled)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            if not session.closed:
                await session.close()


@contextlib.contextmanager
def _map_aiohttp_errors(url: str, sampled: Sequence[int]) -> Iterator[None]:
    """aiohttp's failures as ours, worded as :func:`map_transport_errors` words httpx's
    (which still wraps this, for the framer's errors)."""
    import aiohttp

    with map_transport_errors(url, sampled):
        try:
            yield
        except aiohttp.ConnectionTimeoutError as exc:
            raise Retryable(
                with_settings(
                    EngineTimeoutError(f"connecting to {url} timed out; is the host reachable?"),
                    "base_url",
                )
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise Retryable(
                with_settings(
                    EngineUnavailableError(
                        f"cannot connect to {url}: {exc.os_error or exc}. Is the server running "
                        "and the URL right? (vLLM: `vllm serve openai/gpt-oss-20b`, then the "
                        "base URL http://HOST:8000/v1)"
                    ),
                    "base_url",
                )
            ) from exc
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientOSError,
        ) as exc:
            error = EngineError(
                f"the connection to {url} broke after {len(sampled)} tokens "
                f"({type(exc).__name__}: {exc}); check the server's logs"
            )
            if not sampled:
                raise Retryable(error) from exc
            raise error from exc
        except aiohttp.ClientError as exc:
            raise EngineError(f"the request to {url} failed: {type(exc).__name__}: {exc}") from exc


def make_client(connect_timeout: float, transport: httpx.AsyncBaseTransport | None) -> HttpClient:
    """aiohttp on asyncio when it is installed and no httpx transport was given; else httpx."""
    if transport is None:
        import asyncio

        try:
            asyncio.get_running_loop()
            on_asyncio = True
        except RuntimeError:  # trio, or no loop at all
            on_asyncio = False
        if on_asyncio:
            try:
                import aiohttp  # noqa: F401
            except ImportError:
                pass
            else:
                return AiohttpClient(connect_timeout)
    return HttpxClient(connect_timeout, transport)
