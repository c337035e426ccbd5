"""Engine specs parsed in one place; the CLI and the environment variables use it, and the
CLI adds its options to library messages."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest
from harmony_agent import cli
from harmony_agent.engine import OpenAICompatibleEngine, ScriptedEngine
from harmony_agent.engine._spec import (
    ENGINE_ENV,
    MODEL_ENV,
    EngineSpec,
    engine_from_spec,
    load_scripted,
    parse_engine_spec,
)
from harmony_agent.errors import ConfigurationError


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("vllm", EngineSpec("vllm", "openai/gpt-oss-20b")),
        ("vllm:", EngineSpec("vllm", "openai/gpt-oss-20b")),
        ("vllm:/models/tiny", EngineSpec("vllm", "/models/tiny")),
        ("http://127.0.0.1:8000/v1", EngineSpec("http", "http://127.0.0.1:8000/v1", None, "vllm")),
        (
            "https://api.fireworks.ai/inference/v1",
            EngineSpec("http", "https://api.fireworks.ai/inference/v1", None, "fireworks"),
        ),
        ("scripted:replies.json", EngineSpec("scripted", "replies.json")),
    ],
)
def test_forms(spec, parsed):
    assert parse_engine_spec(spec, environ={}) == parsed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("llama", "unknown engine 'llama': use vllm"),
        ("vllmx", "unknown engine 'vllmx'"),
        ("scripted:", "names no file"),
        ("http://:80/v1", "has no host"),
        ("ftp://x/v1", "unknown engine"),
    ],
)
def test_bad_forms_say_what_is_accepted(spec, message):
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_engine_spec(spec, environ={})
    assert caught.value.settings == ("engine",) and "--engine" not in str(caught.value)


def test_environment_variables():
    env = {ENGINE_ENV: "vllm", MODEL_ENV: "/models/x"}
    assert parse_engine_spec(None, environ=env) == EngineSpec("vllm", "/models/x")
    assert parse_engine_spec("", environ={}).kind == "vllm"
    http = parse_engine_spec(None, environ={ENGINE_ENV: "http://h:1/v1", MODEL_ENV: "m"})
    assert (http.kind, http.model) == ("http", "m")
    assert parse_engine_spec("vllm:/given", environ=env).target == "/given"  # spec wins
    with pytest.raises(ConfigurationError, match=r"\(from \$HARMONY_AGENT_ENGINE\)"):
        parse_engine_spec(None, environ={ENGINE_ENV: "nonsense"})


def test_engine_from_spec_builds_each_kind(tmp_path, monkeypatch):
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    monkeypatch.setenv(MODEL_ENV, "served-model")
    http = engine_from_spec("http://127.0.0.1:9/v1")
    assert isinstance(http, OpenAICompatibleEngine)
    assert (http.model, http.flavor.name) == ("served-model", "vllm")
    monkeypatch.setenv("FIREWORKS_API_KEY", "k")
    fireworks = engine_from_spec("https://api.fireworks.ai/inference/v1", model="accounts/x")
    assert fireworks.flavor.name == "fireworks" and fireworks.model == "accounts/x"
    replies = tmp_path / "r.json"
    replies.write_text(json.dumps({"replies": ["<|channel|>final<|message|>x<|return|>"]}))
    scripted = engine_from_spec(f"scripted:{replies}")
    assert isinstance(scripted, ScriptedEngine) and scripted.remaining == 1
    monkeypatch.setenv(ENGINE_ENV, f"scripted:{replies}")
    assert isinstance(engine_from_spec(), ScriptedEngine)


def test_scripted_file_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_scripted(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigurationError, match="is not JSON"):
        load_scripted(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigurationError, match="JSON list of strings"):
        load_scripted(bad)


def test_the_cli_names_its_options_for_library_errors(capsys, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    code = cli.main(
        ["run", "x", "--engine", "http://127.0.0.1:9/v1", "--api-key-env", "NOT_SET_ANYWHERE"]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and "NOT_SET_ANYWHERE is not set" in err
        and err.rstrip().endswith("(--api-key-env)")
    )
    code = cli.main(["run", "x", "--engine", "nonsense"])
    assert code == 2 and capsys.readouterr().err.rstrip().endswith("(--engine)")


def test_the_cli_adds_options_to_engine_errors_of_a_run(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = cli.main(
        [
            "run",
            "x",
            "--engine",
            f"http://127.0.0.1:{port}/v1",
            "--model",
            "m",
            "--no-browser",
            "--no-python",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "EngineUnavailableError: cannot connect" in err
    assert err.endswith("(--engine)")


class _NotFound(http.server.BaseHTTPRequestHandler):
    """A web server that is not an inference server: 404 pages in HTML."""

    def log_message(self, *args: object) -> None:
        pass

    def _page(self) -> None:
        page = b"<!DOCTYPE html>\n<html>\n<head><title>404 Not Found</title></head>\n<body>\n"
        page += b"<h1>Not Found</h1>\n</body>\n</html>\n"
        self.send_response(404)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def do_GET(self) -> None:
        self._page()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self._page()


def test_a_wrong_base_url_keeps_the_hint_in_the_cli(capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/wrong"
        code = cli.main(
            ["run", "x", "--engine", url, "--model", "m", "--no-browser", "--no-python"]
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "<" not in last
    assert "an HTML page titled '404 Not Found'" in last and "check the base URL" in last
    assert last.endswith("model name 'm' (--engine, --model)")


def test_sglang_forms():
    url = "http://127.0.0.1:30000/v1"
    assert parse_engine_spec(f"sglang:{url}", environ={}) == EngineSpec("http", url, None, "sglang")
    assert parse_engine_spec("sglang:", environ={}) == EngineSpec("http", url, None, "sglang")
    assert parse_engine_spec("sglang", environ={MODEL_ENV: "m"}).model == "m"
    gateway = parse_engine_spec("sglang:https://gateway.internal/v1", environ={})
    assert (gateway.target, gateway.flavor) == ("https://gateway.internal/v1", "sglang")
    engine = engine_from_spec(f"sglang:{url}", model="openai/gpt-oss-20b")
    assert isinstance(engine, OpenAICompatibleEngine) and engine.flavor.name == "sglang"
    assert engine.base_url == url and engine.model == "openai/gpt-oss-20b"
    for bad in ("sglang:127.0.0.1:30000", "sglang:http://:1/v1"):
        with pytest.raises(
            ConfigurationError, match=r"e\.g\. sglang:http://127\.0\.0\.1:30000/v1"
        ) as caught:
            parse_engine_spec(bad, environ={})
        assert caught.value.settings == ("engine",)
    # the message for an unknown engine names the form
    with pytest.raises(ConfigurationError, match=r"sglang:http://HOST:PORT/v1"):
        parse_engine_spec("sglangx", environ={})
