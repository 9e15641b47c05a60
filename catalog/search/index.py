"""The catalog's search index: tantivy, embedded in the project under .tally/index/.

Layout: `.tally/index/CURRENT` names the live generation folder (`gen-*`), which holds the
tantivy files and `manifest.json` (the content hash of every definition file and state file
the generation was built from, and a hash per card). A reader hashes the inputs (a few small
files), compares them with the manifest and, when they match, queries tantivy directly
without loading the project: that is the fast path of `tally search` and `show`.

When anything differs, the writer takes the project lock, loads and validates the project,
copies the live generation into a `.tally-tmp-*` folder, deletes and re-adds only the cards
whose content changed, renames the folder to a new generation and swaps CURRENT atomically.
A reader therefore sees the old generation or the new one, never a half-built index; a stale
index is never served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tantivy
from tally.catalog.store.fsutil import atomic_write_text, find_definition_files, project_lock
from tally.catalog.store.paths import (
    CONTRACT_RESULTS_FILE,
    INDEX_DIR,
    METRICS_DIR,
    TABLE_STATS_FILE,
    TEMP_PREFIX,
)

if TYPE_CHECKING:
    from tally.catalog.spec.project import Project

SCHEMA_VERSION = 11  # 8: versions; 9: cards carry `owners`; 10: aliases; 11: `funnel`
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
STATE_FILES = (TABLE_STATS_FILE.as_posix(), CONTRACT_RESULTS_FILE.as_posix())


def build_schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    for raw in ("id", "name", "kind", "status"):
        builder.add_text_field(raw, stored=raw in ("id", "name"), tokenizer_name="raw",
                               index_option="basic")
    for facet in ("owner", "tag", "contract"):
        builder.add_text_field(facet, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("name_tokens", tokenizer_name="default", index_option="freq")
    builder.add_text_field("text", tokenizer_name="default", index_option="freq")
    builder.add_text_field("name_numbers", tokenizer_name="default", index_option="freq")
    builder.add_bytes_field("hit", stored=True, indexed=False)
    builder.add_bytes_field("card", stored=True, indexed=False)
    return builder.build()


# tally.catalog.search.query.SearchHit's fields before the score
HIT_FIELDS = ("kind", "name", "owner", "description", "tags", "status", "version",
              "model_count", "version_count")


def hit_summary(card: dict[str, Any]) -> list[Any]:
    """The few fields a search result shows (HIT_FIELDS, in order), stored apart from the
    card as a JSON list: a hit decodes it without parsing keys."""
    description = (card.get("description") or "").strip().splitlines()
    return [card["kind"], card["name"], card.get("owner"),
            description[0] if description else "", card.get("tags") or [],
            card.get("status"), card.get("version"), card.get("model_count", 0),
            card.get("version_count", 1)]


def card_document(card: dict[str, Any], encoded: bytes | None = None) -> tantivy.Document:
    doc = tantivy.Document()
    doc.add_text("id", card["id"])
    doc.add_text("name", card["name"])
    for alias in card.get("aliases") or []:  # an exact alias ranks like the exact name
        doc.add_text("name", alias_key(alias))
    doc.add_text("kind", card["kind"])
    doc.add_text("status", card.get("status") or "none")
    owners = [o.strip().lower() for o in (card.get("owner") or "").split(",") if o.strip()]
    for owner in owners:
        doc.add_text("owner", owner)
        doc.add_text("owner", owner.split("@", 1)[0])
    for tag in card.get("tags") or []:
        doc.add_text("tag", tag.lower())
    for state in (card.get("contract") or {}).get("states", []) if card["kind"] == "source" \
            else []:
        doc.add_text("contract", state)
    # Numbers apart from words: a query's typo automaton walks only the words (a catalog may
    # hold tens of thousands of numbered names), and numbers are matched exactly or as prefix.
    tokens = card["name"].split("_")
    doc.add_text("name_tokens", " ".join(t for t in tokens if not t.isdigit()))
    doc.add_text("name_numbers", " ".join(t for t in tokens if t.isdigit()))
    words = " ".join([card.get("description") or "", " ".join(card.get("tags") or []),
                      " ".join(card.get("aliases") or []),
                      " ".join(card.get("columns") or []) if card["kind"] == "feature_view"
                      else ""])
    doc.add_text("text", words)
    doc.add_bytes("hit", json.dumps(hit_summary(card), ensure_ascii=False).encode())
    doc.add_bytes("card", encoded if encoded is not None else encode_card(card))
    return doc


def alias_key(alias: str) -> str:
    """An alias as the query that names it exactly: its lower-case words joined by `_`."""
    return "_".join(re.findall(r"[a-z0-9]+", alias.lower()))


def encode_card(card: dict[str, Any]) -> bytes:
    return json.dumps(card, sort_keys=True, ensure_ascii=False, default=str).encode()


# -- inputs and freshness -----------------------------------------------------------------

def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def definition_hashes(root: Path) -> dict[str, str]:
    """sha256 per definition file, keyed like Project.file_hashes (`metrics/x.yaml`)."""
    out: dict[str, str] = {}
    for path in find_definition_files(root):
        digest = _sha(path)
        if digest is not None:
            out[path.relative_to(root).as_posix()] = digest
    return out


def current_inputs(root: Path) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "definitions": definition_hashes(root),
            "state": {name: _sha(root / name) for name in STATE_FILES}}


@dataclass
class OpenIndex:
    """A searchable generation of the index (or an in-memory one when the project folder is
    read-only)."""

    index: tantivy.Index
    manifest: dict[str, Any]
    folder: Path | None

    @property
    def searcher(self) -> tantivy.Searcher:
        return self.index.searcher()

    @property
    def schema(self) -> tantivy.Schema:
        return self.index.schema


def _read_current(root: Path) -> Path | None:
    base = root / INDEX_DIR
    try:
        name = (base / CURRENT).read_text("utf-8").strip()
    except OSError:
        return None
    return base / name if name.startswith("gen-") and "/" not in name else None


def open_current(root: Path) -> OpenIndex | None:
    """The live generation, or None when there is none (or it vanished mid-swap)."""
    for _ in range(3):
        folder = _read_current(root)
        if folder is None:
            return None
        try:
            manifest = json.loads((folder / MANIFEST).read_text("utf-8"))
            index = tantivy.Index.open(str(folder))
        except (OSError, ValueError):
            continue  # swapped and cleaned between two reads: read CURRENT again
        return OpenIndex(index, manifest, folder)
    return None


def is_fresh(opened: OpenIndex | None, inputs: dict[str, Any]) -> bool:
    return opened is not None and opened.manifest.get("inputs") == inputs


# -- building ----------------------------------------------------------------------------

STORE_BLOCK = 4096  # bytes of stored documents compressed together (tantivy's default 16384)


def _create_index(folder: Path) -> tantivy.Index:
    """A new empty index whose document store compresses small blocks: a search reads the
    stored summary of each hit it shows, a random document each, and decompressing a 4 KB
    block instead of 16 KB halves that (the index grows by a fifth). The Python bindings
    do not take index settings, so the setting goes into the meta.json tantivy reads them
    from, before anything is written; without that key the default stays."""
    tantivy.Index(build_schema(), path=str(folder), reuse=False)
    meta_path = folder / "meta.json"
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        meta = json.loads(meta_path.read_text("utf-8"))
        if "docstore_blocksize" in meta.get("index_settings", {}):
            meta["index_settings"]["docstore_blocksize"] = STORE_BLOCK
            meta_path.write_text(json.dumps(meta), "utf-8")
    return tantivy.Index.open(str(folder))


def _add_cards(index: tantivy.Index, cards: list[tuple[dict[str, Any], bytes]],
               remove: list[str]) -> None:
    threads = 1 if len(cards) < 20_000 else min(4, os.cpu_count() or 1)
    writer = index.writer(heap_size=64_000_000 * threads, num_threads=threads)
    for ident in remove:
        writer.delete_documents_by_term("id", ident)
    for card, encoded in cards:
        writer.add_document(card_document(card, encoded))
    writer.commit()
    writer.wait_merging_threads()


def write_generation(root: Path, cards: list[dict[str, Any]], inputs: dict[str, Any],
                     previous: OpenIndex | None, *, incremental: bool = True) -> OpenIndex:
    """Build a new generation beside the live one and swap it in. Call under the lock."""
    base = root / INDEX_DIR
    base.mkdir(parents=True, exist_ok=True)
    encoded = [(card, encode_card(card)) for card in cards]
    hashes = {card["id"]: hashlib.sha256(data).hexdigest()[:32] for card, data in encoded}
    old = None
    if incremental and previous is not None and previous.folder is not None and (
            (previous.manifest.get("inputs") or {}).get("schema") == SCHEMA_VERSION):
        old = previous.manifest.get("cards")
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=base))
    tmp.chmod(0o755)
    try:
        if old is not None and previous is not None and previous.folder is not None:
            shutil.rmtree(tmp)
            shutil.copytree(previous.folder, tmp,
                            ignore=shutil.ignore_patterns(".tantivy-*.lock", MANIFEST))
            index = tantivy.Index.open(str(tmp))
            changed = [(c, e) for c, e in encoded if old.get(c["id"]) != hashes[c["id"]]]
            remove = [i for i in old if i not in hashes or old[i] != hashes[i]]
        else:
            index = _create_index(tmp)
            changed, remove = encoded, []
        if changed or remove or old is None:
            _add_cards(index, changed, remove)
        manifest = {"inputs": inputs, "cards": hashes, "built_at": time.time(),
                    "changed": len(changed), "removed": len(remove), "count": len(cards)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, sort_keys=True), "utf-8")
        final = base / f"gen-{time.time_ns():x}-{os.getpid()}"
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(base / CURRENT, final.name + "\n")
    _prune(base, keep={final.name, previous.folder.name if previous and previous.folder
                       else ""})
    return OpenIndex(tantivy.Index.open(str(final)), manifest, final)


def _prune(base: Path, keep: set[str]) -> None:
    """Drop older generations (the previous one stays for readers that just opened it) and
    temp folders of killed builders. Called under the lock."""
    for child in base.iterdir():
        if child.name in keep or child.name == CURRENT:
            continue
        if child.name.startswith(("gen-", TEMP_PREFIX)):
            with contextlib.suppress(OSError):
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()


def memory_index(cards: list[dict[str, Any]], inputs: dict[str, Any]) -> OpenIndex:
    index = tantivy.Index(build_schema())
    _add_cards(index, [(card, encode_card(card)) for card in cards], [])
    index.reload()
    return OpenIndex(index, {"inputs": inputs, "count": len(cards)}, None)


def _project_for(root: Path, project: Project | None, inputs: dict[str, Any]) -> Project:
    if project is not None and project.file_hashes == inputs["definitions"]:
        return project
    from tally.catalog.spec.loading import load_project

    return load_project(root)


def ensure_index(root: Path | str, project: Project | None = None,
                 on_wait: Callable[[str], None] | None = None) -> OpenIndex:
    """A fresh index of the project at `root`: the live one when nothing changed, else
    rebuilt (incrementally) first. Raises DefinitionError when the definitions are invalid."""
    root = Path(root).resolve()
    if not (root / METRICS_DIR).is_dir():
        from tally.catalog.spec.loading import check_project_root

        check_project_root(root)  # raises ProjectNotFoundError with how to fix it
    inputs = current_inputs(root)
    opened = open_current(root)
    if is_fresh(opened, inputs):
        return opened  # type: ignore[return-value]
    try:
        with project_lock(root, on_wait=on_wait):
            opened = open_current(root)
            inputs = current_inputs(root)
            if is_fresh(opened, inputs):
                return opened  # type: ignore[return-value]
            loaded = _project_for(root, project, inputs)
            inputs["definitions"] = dict(loaded.file_hashes)
            from tally.catalog.search.cards import build_cards

            return write_generation(root, build_cards(loaded), inputs, opened)
    except PermissionError:
        # a read-only project (a shared checkout): serve a private in-memory index
        from tally.catalog.search.cards import build_cards

        return memory_index(build_cards(_project_for(root, project, inputs)), inputs)


