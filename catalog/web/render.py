"""Jinja2 rendering of the catalog pages; autoescaped, so every user text is shown as text."""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from tally.catalog.web.site import FACETS, REPORTS, Site

ASSETS = ("tally.css", "tally.js")
ASSET_TYPES = {"tally.css": "text/css; charset=utf-8",
               "tally.js": "text/javascript; charset=utf-8"}


def asset(name: str) -> bytes:
    """One of the package's static files (ASSETS); nothing else is ever read."""
    if name not in ASSETS:
        raise KeyError(name)
    return (importlib.resources.files("tally.catalog.web") / "static" / name).read_bytes()


def script_json(data: Any) -> str:
    """JSON safe to place in a script: no `<`, `>` or `&` to end the script or open a tag."""
    text = json.dumps(data, ensure_ascii=False, default=str, sort_keys=True)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


class Renderer:
    """Pages of one site in one mode: `server` (search asks the API) or `static` (search
    ranks over the page's index)."""

    def __init__(self, site: Site, mode: str):
        self.site = site
        self.mode = mode
        self.env = Environment(loader=PackageLoader("tally.catalog.web", "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               trim_blocks=True, lstrip_blocks=True)

    def page(self, template: str, context: dict[str, Any], prefix: str) -> str:
        return self.env.get_template(template).render(
            **context, prefix=prefix, mode=self.mode, site_title=self.site.title,
            reports=REPORTS, facets=FACETS)

    def search(self, query: str, filters: dict[str, list[str]]) -> str:
        return self.page("search.html", self.site.search_context(query, filters), "")

    def entry(self, kind: str, name: str) -> str:
        return self.page("entry.html", self.site.entry_context(kind, name), "../")

    def explain(self, score: str, key: str, at: str | None = None) -> str:
        return self.page("explain.html", self.site.explain_context(score, key, at),
                         "../../../")

    def reuse(self) -> str:
        return self.page("reuse.html", self.site.reuse_context(), "")

    def portfolio(self) -> str:
        return self.page("portfolio.html", self.site.portfolio_context(), "")

    def error(self, status: int, heading: str, message: str, prefix: str = "/") -> str:
        return self.page("error.html", {"status": status, "heading": heading,
                                        "message": message}, prefix)
