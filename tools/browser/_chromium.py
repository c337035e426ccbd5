"""One Chromium for the whole process, started on first use and shared by every run.

Playwright objects belong to the event loop that made them, so the shared browser is kept
per loop. Runs hold a lease on it; when the last lease ends the browser closes, so nothing
outlives the loop. A browser that crashed is started again on the next lease.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from typing import Any

import anyio
from harmony_agent.errors import ConfigurationError, ToolExecutionError

__all__ = ["CHROMIUM_ENV", "Chromium", "chromium_for_this_loop"]

CHROMIUM_ENV = "PLAYWRIGHT_CHROMIUM_PATH"
DEFAULT_PATHS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")


# Egress is enforced by each run's proxy (see _proxy.py); these switches close what a proxy
# cannot see: WebRTC may use UDP only through a proxy (so never: STUN and TURN over UDP are
# off), QUIC is off, and Chromium resolves no names itself (DNS prefetch, preconnect), since
# every request names its host to the proxy instead.
LAUNCH_ARGS = (
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--disable-features=DnsOverHttps",
)


def chromium_path() -> str:
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        if not os.path.exists(explicit):
            raise ConfigurationError(f"{CHROMIUM_ENV}={explicit} does not exist")
        return explicit
    for path in DEFAULT_PATHS:
        if os.path.exists(path):
            return path
    raise ConfigurationError(
        "no Chromium found: install Debian's `chromium` package (apt-get install chromium) or "
        f"set {CHROMIUM_ENV} to a Chromium binary; harmony-agent never downloads a browser"
    )


class Chromium:
    """A leased, lazily started, restartable Chromium."""

    def __init__(self) -> None:
        self._playwright: Any = None
        self._manager: Any = None
        self._browser: Any = None
        self._leases = 0
        self._lock = anyio.Lock()

    async def acquire(self) -> Any:
        async with self._lock:
            if self._browser is None or not self._browser.is_connected():
                await self._stop()
                await self._start()
            self._leases += 1
            return self._browser

    async def release(self) -> None:
        async with self._lock:
            self._leases -= 1
            if self._leases <= 0:
                self._leases = 0
                await self._stop()

    async def _start(self) -> None:
        try:
            from playwright.async_api import async_playwright
        except ImportError as exc:
            raise ConfigurationError(
                "the browser tool needs Playwright: pip install 'harmony-agent[browser]'"
            ) from exc
        path = chromium_path()
        self._manager = async_playwright()
        self._playwright = await self._manager.start()
        try:
            self._browser = await self._playwright.chromium.launch(
                executable_path=path,
                headless=True,
                args=[*LAUNCH_ARGS],
            )
        except Exception as exc:
            await self._stop()
            raise ToolExecutionError(f"Chromium ({path}) did not start: {exc}") from exc

    async def _stop(self) -> None:
        browser, self._browser = self._browser, None
        manager, self._manager = self._manager, None
        self._playwright = None
        with anyio.CancelScope(shield=True):
            if browser is not None:
                try:
                    await browser.close()
                except Exception:  # already gone (crashed): nothing to close
                    pass
            if manager is not None:
                try:
                    await manager.__aexit__(None, None, None)
                except Exception:
                    pass


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Chromium] = (
    weakref.WeakKeyDictionary()
)


def chromium_for_this_loop() -> Chromium:
    loop = asyncio.get_running_loop()
    chromium = _PER_LOOP.get(loop)
    if chromium is None:
        chromium = _PER_LOOP[loop] = Chromium()
    return chromium
