"""The built-in ``browser`` tool: gpt-oss's search/open/find on a real Chromium."""

from ._citations import Citation, citations, link_citations
from ._policy import UrlPolicy
from ._search import LocalSearch, SearchBackend, SearchResult, SearxngSearch
from .tool import BrowserTool

__all__ = [
    "BrowserTool",
    "Citation",
    "LocalSearch",
    "SearchBackend",
    "SearchResult",
    "SearxngSearch",
    "UrlPolicy",
    "citations",
    "link_citations",
]
