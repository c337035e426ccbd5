"""Which URLs the browser may load: schemes, domain lists, and only global addresses unless
the operator allows more. Pure apart from DNS, which goes through a replaceable resolver.

URLs are read with a WHATWG URL parser (ada, the parser Node uses), so the host checked here is
the host Chromium connects to (``\\`` is ``/``, ``0x7f.1`` is ``127.0.0.1``, IDN becomes
punycode). Domain list entries are normalised by the same parser. A check returns the
addresses it approved; the egress proxy connects to exactly those, so a name cannot resolve to
one address for the check and to another for the connection.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import ada_url
from harmony_agent.errors import ConfigurationError

__all__ = ["PolicyViolation", "Target", "UrlPolicy", "address_kind", "normalize_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Iterable[str]]


class PolicyViolation(Exception):
    """A URL broke a rule; ``rule`` names it."""

    def __init__(self, url: str, rule: str, detail: str) -> None:
        super().__init__(f"{url} is blocked by the `{rule}` rule: {detail}")
        self.url = url
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Target:
    """A URL the policy allowed: its normalised form and the addresses to connect to."""

    url: str
    scheme: str
    host: str  # lower case, punycode, no trailing dot; IPv6 without brackets
    port: int
    addresses: tuple[str, ...]


# Address blocks that are not globally reachable (IANA special-purpose registries). IPv6 forms
# that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are judged by the IPv4
# address inside them, before this table.
_BLOCKS: tuple[tuple[str, str], ...] = tuple(
    (net, kind)
    for kind, nets in (
        ("unspecified", "0.0.0.0/8 ::/128"),
        ("loopback", "127.0.0.0/8 ::1/128"),
        ("private", "10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7"),
        ("shared address space", "100.64.0.0/10"),
        ("link-local", "169.254.0.0/16 fe80::/10"),
        ("site-local", "fec0::/10"),
        ("multicast", "224.0.0.0/4 ff00::/8"),
        ("reserved", "240.0.0.0/4 192.0.0.0/24 198.18.0.0/15 192.88.99.0/24 100::/64 5f00::/16"),
        ("reserved", "64:ff9b:1::/48 2001::/23 ::/96 ::ffff:0:0:0/96"),
        ("documentation", "192.0.2.0/24 198.51.100.0/24 203.0.113.0/24 2001:db8::/32 3fff::/20"),
    )
    for net in nets.split()
)
_NETWORKS = tuple((ipaddress.ip_network(net), kind) for net, kind in _BLOCKS)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_TEREDO = ipaddress.ip_network("2001::/32")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip in _TEREDO and ip.teredo is not None:
        return list(ip.teredo)
    return []


def address_kind(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a global address (``"loopback"``, ``"private"``, ...), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "link-local"
        for inner in _embedded_ipv4(ip):
            kind = address_kind(inner)
            if kind is not None:
                return f"{kind} (inside {ip})"
    for network, kind in _NETWORKS:
        if ip.version == network.version and ip in network:
            return kind
    return None


def normalize_host(value: str) -> str:
    """A host or domain-list entry in the one form the checks compare: what the WHATWG parser
    makes of it (lower case, punycode, IPv4 in dotted form), without a trailing dot."""
    raw = value.strip()
    for prefix in ("*.", "."):
        if raw.startswith(prefix):
            raw = raw[len(prefix) :]
    bare = raw.strip("[]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    try:
        host = ada_url.URL(f"http://{raw}/").hostname
    except ValueError:
        host = ""
    if not host or "/" in raw or "@" in raw:
        raise ConfigurationError(
            f"{value!r} is not a host name or address; write it as in a URL's host, "
            "e.g. 'example.com' or '10.0.0.5'"
        )
    return _bare(host)


def _bare(host: str) -> str:
    host = host.rstrip(".")
    if host.startswith("["):
        return str(ipaddress.ip_address(host.strip("[]")))
    return host


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _matches(host: str, entries: Iterable[str]) -> bool:
    if _is_address(host):
        return host in entries  # an address matches only itself, never as a "subdomain"
    return any(host == d or host.endswith("." + d) for d in entries)


def _system_resolver(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


@dataclass
class UrlPolicy:
    """Schemes, domain allow/deny lists, and addresses: only global ones unless allowed.

    ``allow_domains`` (when set) lists the only domains allowed, subdomains included. Names are
    resolved and every address must be global (not loopback, private, link-local, shared
    address space, site-local, multicast, reserved, nor an IPv6 form wrapping such an IPv4
    address); a name that does not resolve is refused. ``private_exceptions`` lists hosts or
    addresses allowed even if not global. Successful lookups are kept ``dns_ttl`` seconds,
    failures not at all. ``resolver`` replaces the system's (it returns addresses or raises
    ``OSError``).
    """

    allowed_schemes: frozenset[str] = frozenset({"http", "https"})
    allow_domains: tuple[str, ...] | None = None
    deny_domains: tuple[str, ...] = ()
    allow_private_network: bool = False
    private_exceptions: tuple[str, ...] = ()  # hosts or addresses allowed even if private
    resolver: Resolver = field(default=_system_resolver, repr=False)
    dns_ttl: float = 30.0
    _cache: dict[str, tuple[float, tuple[str, ...]]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.allow_domains is not None:
            self.allow_domains = tuple(normalize_host(d) for d in self.allow_domains)
        self.deny_domains = tuple(normalize_host(d) for d in self.deny_domains)
        self.private_exceptions = tuple(normalize_host(h) for h in self.private_exceptions)

    def check(self, url: str) -> Target:
        """The allowed :class:`Target` of ``url``, or :class:`PolicyViolation` (may resolve DNS)."""
        try:
            parsed = ada_url.URL(url)
        except ValueError:
            raise PolicyViolation(url, "url", "it is not a valid URL") from None
        scheme = parsed.protocol.rstrip(":")
        if scheme not in self.allowed_schemes:
            raise PolicyViolation(
                url, "scheme", f"only {', '.join(sorted(self.allowed_schemes))} URLs may be opened"
            )
        host = _bare(parsed.hostname)
        if not host:
            raise PolicyViolation(url, "url", "the URL has no host")
        port = int(parsed.port) if parsed.port else (443 if scheme in ("https", "wss") else 80)
        return self._check_host(parsed.href, scheme, host, port)

    def check_authority(self, authority: str, scheme: str = "https") -> Target:
        """The same checks for a ``host:port`` (a proxy's CONNECT target)."""
        return self.check(f"{scheme}://{authority}/")

    def _check_host(self, url: str, scheme: str, host: str, port: int) -> Target:
        if _matches(host, self.deny_domains):
            raise PolicyViolation(url, "deny_domains", f"{host} is on the deny list")
        if self.allow_domains is not None and not _matches(host, self.allow_domains):
            raise PolicyViolation(
                url,
                "allow_domains",
                f"{host} is not on the allow list ({', '.join(self.allow_domains)})",
            )
        excepted = self.allow_private_network or host in self.private_exceptions
        if not excepted and (host == "localhost" or host.endswith(".localhost")):
            raise PolicyViolation(url, "private_network", f"{host} is a loopback name")
        addresses = self._addresses(url, host)
        if not excepted:
            for address in addresses:
                kind = address_kind(ipaddress.ip_address(address))
                if kind is not None and address not in self.private_exceptions:
                    raise PolicyViolation(
                        url,
                        "private_network",
                        f"{host} is a {kind} address ({address}), and only global addresses "
                        "are allowed; pass allow_private_network=True (or a list of hosts) "
                        "to allow it",
                    )
        return Target(url, scheme, host, port, addresses)

    def _addresses(self, url: str, host: str) -> tuple[str, ...]:
        if _is_address(host):
            return (host,)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            found = tuple(sorted({str(ipaddress.ip_address(a)) for a in self.resolver(host)}))
        except (OSError, UnicodeError, ValueError) as exc:
            found, reason = (), str(exc) or type(exc).__name__
        else:
            reason = "no addresses"
        if not found:  # fail closed, and ask again next time
            raise PolicyViolation(url, "resolve", f"{host} does not resolve ({reason})")
        with self._lock:
            self._cache[host] = (now + self.dns_ttl, found)
        return found
