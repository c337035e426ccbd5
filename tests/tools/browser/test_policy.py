"""The URL policy on its own: no Chromium, no network (addresses are checked as literals)."""

from __future__ import annotations

import pytest
from harmony_agent.tools.browser import UrlPolicy
from harmony_agent.tools.browser._policy import PolicyViolation


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
