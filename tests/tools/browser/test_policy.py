"""The URL policy on its own: no Chromium, no network (addresses are checked as literals)."""

from __future__ import annotations

import socket

import pytest
from harmony_agent.tools.browser import UrlPolicy
from harmony_agent.tools.browser._policy import PolicyViolation


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    """These tests never ask a real resolver (names get a fake one, addresses need none) and
    never open a connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a policy unit test tried a DNS lookup: {args}")

    def no_connection(*args, **kwargs):
        raise AssertionError(f"a policy unit test tried to connect: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # the private, link-local and metadata addresses below are only ever checked, never reached
    monkeypatch.setattr(socket, "create_connection", no_connection)
    monkeypatch.setattr(socket.socket, "connect", no_connection)
    monkeypatch.setattr(socket.socket, "connect_ex", no_connection)


def PUBLIC(host: str) -> list[str]:
    return ["93.184.215.14"]  # a fake resolver: every name is one global address


def rule_of(policy: UrlPolicy, url: str) -> str | None:
    try:
        policy.check(url)
    except PolicyViolation as violation:
        return violation.rule
    return None


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "http://10.1.2.3/admin",
        "http://192.168.0.1/",
        "http://172.16.0.1/",
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://0.0.0.0/",
    ],
)
def test_private_ranges_are_refused(url):
    assert rule_of(UrlPolicy(), url) == "private_network"
    assert rule_of(UrlPolicy(allow_private_network=True), url) is None


# --- class 9: only global addresses, fail closed, one normalisation, WHATWG parsing ------------


@pytest.mark.parametrize(
    "url",
    [
        "http://100.64.0.1/",  # shared address space (carrier-grade NAT)
        "http://100.100.100.200/",  # a cloud metadata address inside it
        "http://[fec0::1]/",  # site-local
        "http://[2002:7f00:1::]/",  # 6to4 wrapping 127.0.0.1
        "http://[2002:a01:203::1]/",  # 6to4 wrapping 10.1.2.3
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "http://[::127.0.0.1]/",  # IPv4-compatible
        "http://198.18.0.1/",  # benchmarking
        "http://192.0.0.1/",
        "http://224.0.0.1/",  # multicast
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://0x7f.1/",  # 127.0.0.1 the way a browser reads it
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://0177.0.0.1/",  # octal
    ],
)
def test_only_global_addresses_are_allowed(url):
    assert rule_of(UrlPolicy(), url) == "private_network", url


@pytest.mark.parametrize(
    "url", ["http://93.184.215.14/", "http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/"]
)
def test_global_addresses_are_allowed(url):
    assert rule_of(UrlPolicy(), url) is None


def test_a_name_that_does_not_resolve_is_refused_and_not_remembered():
    calls: list[str] = []
    answers: list[list[str] | None] = [None, ["93.184.215.14"]]

    def resolver(host: str) -> list[str]:
        calls.append(host)
        answer = answers[len(calls) - 1]
        if answer is None:
            raise OSError("name not found")
        return answer

    policy = UrlPolicy(resolver=resolver)
    assert rule_of(policy, "http://flaky.test/") == "resolve"
    assert rule_of(policy, "http://flaky.test/") is None  # asked again, not a cached failure
    assert rule_of(policy, "http://flaky.test/b") is None
    assert calls == ["flaky.test", "flaky.test"]  # the success is kept (for a short while)


def test_a_public_name_that_resolves_to_a_private_address_is_refused():
    policy = UrlPolicy(resolver=lambda host: ["93.184.215.14", "10.0.0.7"])
    assert rule_of(policy, "http://rebind.test/") == "private_network"


@pytest.mark.parametrize(
    "entry", ["Example.COM", "example.com.", "EXAMPLE.com.", "*.example.com", ".example.com"]
)
def test_deny_entries_are_normalised_like_hosts(entry):
    policy = UrlPolicy(deny_domains=(entry,), allow_private_network=True)
    for url in ("http://www.EXAMPLE.com./", "http://example.com/", "HTTP://Sub.Example.Com:81/"):
        assert rule_of(policy, url) == "deny_domains", (entry, url)


def test_idn_entries_and_hosts_meet_as_punycode():
    for entry in ("bücher.de", "xn--bcher-kva.de", "BÜCHER.de"):
        policy = UrlPolicy(deny_domains=(entry,), allow_private_network=True)
        assert rule_of(policy, "http://bücher.de/") == "deny_domains"
        assert rule_of(policy, "http://www.xn--bcher-kva.de/") == "deny_domains"
    allow = UrlPolicy(allow_domains=("bücher.de",), resolver=PUBLIC)
    assert rule_of(allow, "http://XN--BCHER-KVA.de/") is None
    assert rule_of(allow, "http://buecher.de/") == "allow_domains"


def test_an_address_entry_matches_only_that_address():
    policy = UrlPolicy(allow_domains=("0.0.1",), allow_private_network=True)
    assert rule_of(policy, "http://127.0.0.1/") == "allow_domains"


def test_urls_are_read_the_way_chromium_reads_them():
    # urllib takes the host after "\@"; a browser treats "\" as "/" and goes to 127.0.0.2
    policy = UrlPolicy(private_exceptions=("127.0.0.1",))
    assert rule_of(policy, "http://127.0.0.2\\@127.0.0.1/") == "private_network"
    assert rule_of(policy, "http://127.0.0.1\\@127.0.0.2/") is None
    assert policy.check("http://127.0.0.1\\@127.0.0.2/").url == "http://127.0.0.1/@127.0.0.2/"
    assert rule_of(policy, "http://user@127.0.0.2/") == "private_network"
    assert rule_of(policy, "http:\\\\127.0.0.2/") == "private_network"
    assert rule_of(policy, "http://127.0.0.1:99999/") == "url"  # not a URL a browser opens


def test_in_page_and_local_schemes_are_refused():
    for url, rule in [
        ("data:text/html,hi", "scheme"),
        ("blob:http://127.0.0.1/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("http:///", "url"),
    ]:
        assert rule_of(UrlPolicy(allow_private_network=True), url) == rule, url


def test_the_checked_target_carries_the_addresses_to_connect_to():
    policy = UrlPolicy(resolver=lambda host: ["93.184.215.14"])
    target = policy.check("https://Name.Test:8443/a?b")
    assert (target.host, target.port, target.addresses) == ("name.test", 8443, ("93.184.215.14",))
    literal = UrlPolicy(allow_private_network=True).check("http://[::1]:81/")
    assert (literal.host, literal.port, literal.addresses) == ("::1", 81, ("::1",))
