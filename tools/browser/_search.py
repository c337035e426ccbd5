"""Search backends for ``browser.search``: a local full-text corpus and SearXNG."""

from __future__ import annotations

import abc
import html
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import httpx
from harmony_agent.errors import ToolExecutionError

__all__ = ["LocalSearch", "SearchBackend", "SearchResult", "SearxngSearch"]


@dataclass(frozen=True, slots=True)
class SearchResult:
    title: str
    url: str
    snippet: str


class SearchBackend(abc.ABC):
    """Answers a query with ranked results."""

    @abc.abstractmethod
    async def search(self, query: str, topn: int) -> list[SearchResult]: ...


def _html_text(source: str) -> tuple[str, str]:
    """(title, text) of an HTML document — enough for indexing."""
    title_m = re.search(r"<title[^>]*>(.*?)</title>", source, re.S | re.I)
    title = html.unescape(re.sub(r"\s+", " ", title_m.group(1))).strip() if title_m else ""
    body = re.sub(r"<(script|style|head)[^>]*>.*?</\1>", " ", source, flags=re.S | re.I)
    text = html.unescape(re.sub(r"<[^>]+>", " ", body))
    return title, re.sub(r"\s+", " ", text).strip()


class LocalSearch(SearchBackend):
    """Offline search over a folder of HTML/Markdown/text files, ranked by SQLite FTS5 (BM25).

    Each file's URL is ``base_url`` + its path relative to the folder, so results open in the
    browser wherever the folder is served (e.g. ``LocalSearch("site/", "http://127.0.0.1:8000/")``).
    ``documents`` adds (url, title, text) triples directly.
    """

    SUFFIXES = (".html", ".htm", ".md", ".markdown", ".txt")

    def __init__(
        self,
        folder: str | Path | None = None,
        base_url: str = "",
        *,
        documents: list[tuple[str, str, str]] | None = None,
    ) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute(
            "CREATE VIRTUAL TABLE docs USING fts5(url UNINDEXED, title, body, "
            "tokenize='porter unicode61')"
        )
        rows = list(documents or [])
        if folder is not None:
            root = Path(folder)
            if not root.is_dir():
                raise FileNotFoundError(f"search corpus folder {root} does not exist")
            for path in sorted(root.rglob("*")):
                if path.suffix.lower() not in self.SUFFIXES or not path.is_file():
                    continue
                source = path.read_text(encoding="utf-8", errors="replace")
                if path.suffix.lower() in (".html", ".htm"):
                    title, text = _html_text(source)
                else:
                    first = source.strip().splitlines()[0] if source.strip() else path.stem
                    title, text = first.lstrip("# ").strip(), source
                url = base_url.rstrip("/") + "/" + path.relative_to(root).as_posix()
                rows.append((url, title or path.stem, text))
        self._db.executemany("INSERT INTO docs VALUES (?, ?, ?)", rows)
        self.size = len(rows)

    def _query(self, query: str, topn: int) -> list[SearchResult]:
        terms = re.findall(r"\w+", query.lower())
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        with self._lock:
            rows = self._db.execute(
                "SELECT url, title, snippet(docs, 2, '', '', ' … ', 24) FROM docs "
                "WHERE docs MATCH ? ORDER BY bm25(docs, 0.0, 5.0, 1.0) LIMIT ?",
                (match, topn),
            ).fetchall()
        return [SearchResult(title, url, snippet) for url, title, snippet in rows]

    async def search(self, query: str, topn: int) -> list[SearchResult]:
        return await anyio.to_thread.run_sync(self._query, query, topn)


class SearxngSearch(SearchBackend):
    """A self-hosted SearXNG instance (its JSON API must be enabled: ``formats: [json]``)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._transport = transport

    async def search(self, query: str, topn: int) -> list[SearchResult]:
        url = f"{self.base_url}/search"
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport) as client:
                response = await client.get(url, params={"q": query, "format": "json"})
        except httpx.HTTPError as exc:
            raise ToolExecutionError(
                f"Error during search for `{query}`: cannot reach {url}: {exc}"
            ) from exc
        if response.status_code != 200:
            hint = (
                " (enable the json format in SearXNG's settings.yml)"
                if response.status_code == 403
                else ""
            )
            raise ToolExecutionError(
                f"Error during search for `{query}`: {url} answered {response.status_code}{hint}"
            )
        try:
            items = response.json().get("results", [])
        except ValueError as exc:
            raise ToolExecutionError(
                f"Error during search for `{query}`: {url} did not send JSON"
            ) from exc
        return [
            SearchResult(i.get("title") or "", i.get("url") or "", i.get("content") or "")
            for i in items[:topn]
            if i.get("url")
        ]
