"""`tally ui --build DIR`: the web catalog as a static site (dbt docs is the model).

The pages are those the server renders, with relative links, so the site works from any
web server or straight from files. Search ranks in the page over `search-index.js` (the
same entries as `search-index.json`, wrapped in a script because browsers do not let a
file:// page fetch JSON). Each score gets an explanation page per entity at its newest
snapshot, up to `explain_limit` entities (its segment examples always).

The site is written into a temporary folder beside DIR and swapped in whole, so DIR holds
the old site or the new one, never half of one; DIR must be new, empty, or a site this
command wrote (it holds the marker file `.tally-site`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tally.catalog.errors import DataError, TallyError
from tally.catalog.search.query import KINDS
from tally.catalog.store.paths import TEMP_PREFIX
from tally.catalog.web.render import ASSETS, Renderer, asset, script_json
from tally.catalog.web.site import KEY, Site, entry_href, explain_href

MARKER = ".tally-site"
DEFAULT_EXPLAIN_LIMIT = 500


@dataclass(frozen=True)
class BuildReport:
    folder: Path
    pages: int
    explanations: int


def _check_target(out: Path, root: Path) -> None:
    if out.exists() and not out.is_dir():
        raise TallyError(f"{out} is a file; give a folder for the static site")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise TallyError(f"{out} is not empty and is not a site `tally ui --build` wrote; give "
                         "a new or empty folder")
    if out == root or out in root.parents:
        raise TallyError(f"{out} holds the project; give a folder of its own for the site")


def _write(folder: Path, relative: str, text: str) -> None:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _explained_keys(site: Site, score: str, limit: int) -> list[str]:
    try:
        keys = [str(k) for k in site.entity_keys(score, limit)]
    except DataError:
        return []  # not computed: the score page says so
    keys += site.score_context(score)["examples"]
    return [k for k in dict.fromkeys(keys) if KEY.match(k)]


def _write_pages(renderer: Renderer, folder: Path, explain_limit: int,
                 on_page: Callable[[str, int, int], None]) -> tuple[int, int]:
    site = renderer.site
    cards = site.loaded().cards.values()
    pages: dict[str, Callable[[], str]] = {
        "index.html": partial(renderer.search, "", {}), "reuse.html": renderer.reuse,
        "portfolio.html": renderer.portfolio}
    for card in cards:
        if card["kind"] in KINDS:
            pages[entry_href(card["kind"], card["name"])] = partial(
                renderer.entry, card["kind"], card["name"])
    explanations = 0
    for score in sorted(site.loaded().project.scores):
        for key in _explained_keys(site, score, explain_limit):
            pages[explain_href(score, key)] = partial(renderer.explain, score, key)
            explanations += 1
    for done, (relative, make) in enumerate(pages.items()):
        _write(folder, relative, make())
        on_page(relative, done + 1, len(pages))
    return len(pages), explanations


def build_site(root: Path | str, out: Path | str, explain_limit: int = DEFAULT_EXPLAIN_LIMIT,
               on_page: Callable[[str, int, int], None] | None = None) -> BuildReport:
    """Write the catalog of the project at `root` as a static site into `out`;
    `on_page(page, done, total)` hears of each page written."""
    site = Site(root)
    target = Path(out).resolve()
    _check_target(target, site.root)
    renderer = Renderer(site, "static")
    site.loaded()  # invalid definitions fail here, before anything is written
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{TEMP_PREFIX}site-{target.name}"
    old = target.parent / f"{TEMP_PREFIX}old-{target.name}"
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        tmp.mkdir()
        (tmp / MARKER).write_text("written by `tally ui --build`; rebuilding replaces it\n")
        for name in ASSETS:
            (tmp / "static").mkdir(exist_ok=True)
            (tmp / "static" / name).write_bytes(asset(name))
        index = script_json(site.search_index())
        _write(tmp, "search-index.json", index + "\n")
        _write(tmp, "search-index.js", f"window.TALLY_INDEX = {index};\n")
        pages, explanations = _write_pages(renderer, tmp, explain_limit,
                                           on_page or (lambda *_: None))
        if target.exists():
            target.rename(old)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return BuildReport(target, pages, explanations)
