"""`make demo` end to end: real Chromium, real sandbox, the offline demo model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.browser
@pytest.mark.sandbox
@pytest.mark.slow
def test_demo_answers_with_resolved_citations(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harmony_agent.demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "offline demo model" in proc.stderr  # announced, never passed off as the model
    answer = proc.stdout
    assert "31 metres" in answer and "1873" in answer and "112.0 mm" in answer
    assert "【1†L12-L14】" in answer and "【4†L9-L20】" in answer
    assert (
        "/lighthouse.html lines 12-14" in proc.stderr and "/climate.html lines 9-20" in proc.stderr
    )
    records = [
        json.loads(line) for line in (tmp_path / "demo-trace.jsonl").read_text().splitlines()
    ]
    calls = [
        r["event"]["recipient"]
        for r in records
        if r["record"] == "event" and r["event"]["type"] == "tool_call"
    ]
    assert calls == [
        "browser.search",
        "browser.open",
        "browser.find",
        "browser.search",
        "browser.open",
        "python",
    ]
    assert (tmp_path / "demo-report.html").stat().st_size > 5000
