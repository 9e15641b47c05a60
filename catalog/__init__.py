"""Tally's catalog: definitions, validation, contracts, plans, search and lineage.

Never imports Feast, typer or rich, so search, show and validate start fast. The public
entry point is `tally.load` (see api/__init__.py); subpackages are described in
docs/architecture.md.
"""
