"""Which URLs the browser may load — checked on every request a page makes."""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["PolicyViolation", "UrlPolicy"]


class PolicyViolation(Exception):
    """A URL broke a rule; ``rule`` names it."""

    def __init__(self, url: str, rule: str, detail: str) -> None:
        super().__init__(f"{url} is blocked by the `{rule}` rule: {detail}")
        self.url = url
        self.rule = rule


def _matches(host: str, domains: Iterable[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


@dataclass
class UrlPolicy:
    """Schemes, domain allow/deny lists, and private, loopback and link-local addresses.

    ``allow_domains`` (when set) lists the only domains allowed, subdomains included.
    Addresses are checked after DNS resolution, so a public name that resolves to a private
    address is blocked too.
    """

    allowed_schemes: frozenset[str] = frozenset({"http", "https"})
    allow_domains: tuple[str, ...] | None = None
    deny_domains: tuple[str, ...] = ()
    allow_private_network: bool = False
    private_exceptions: tuple[str, ...] = ()  # hosts or addresses allowed even if private
    _resolved: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def check(self, url: str) -> None:
        """Raise :class:`PolicyViolation` when ``url`` may not be loaded (may resolve DNS)."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in ("data", "blob") or url == "about:blank":
            return  # in-page content, not a network request
        if scheme not in self.allowed_schemes:
            raise PolicyViolation(
                url, "scheme", f"only {', '.join(sorted(self.allowed_schemes))} URLs may be opened"
            )
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise PolicyViolation(url, "host", "the URL has no host")
        if _matches(host, self.deny_domains):
            raise PolicyViolation(url, "deny_domains", f"{host} is on the deny list")
        if self.allow_domains is not None and not _matches(host, self.allow_domains):
            raise PolicyViolation(
                url,
                "allow_domains",
                f"{host} is not on the allow list ({', '.join(self.allow_domains)})",
            )
        if self.allow_private_network or host in self.private_exceptions:
            return
        if host == "localhost" or host.endswith(".localhost"):
            raise PolicyViolation(url, "private_network", f"{host} is a loopback name")
        for address in self._addresses(host):
            ip = ipaddress.ip_address(address)
            if (
                ip.is_loopback
                or ip.is_private
                or ip.is_link_local
                or ip.is_reserved
                or ip.is_unspecified
                or ip.is_multicast
            ):
                kind = (
                    "loopback"
                    if ip.is_loopback
                    else "link-local"
                    if ip.is_link_local
                    else "private"
                )
                raise PolicyViolation(
                    url,
                    "private_network",
                    f"{host} is a {kind} address ({ip}); pass allow_private_network=True to allow it",
                )

    def _addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            pass
        if host not in self._resolved:
            try:
                infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
                self._resolved[host] = sorted({str(i[4][0]) for i in infos})
            except OSError:
                self._resolved[host] = []  # unresolvable: the browser will fail on its own
        return self._resolved[host]
