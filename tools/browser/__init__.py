"""The built-in ``browser`` tool: gpt-oss's search/open/find on a real Chromium.

Pages, views and ``find`` results are the text the reference browser (gpt-oss's
``simple_browser``, which the model was trained on) gives for the same HTML, byte for byte;
the deliberate deviations, each with its reason, are listed in :mod:`._render`.
"""

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
