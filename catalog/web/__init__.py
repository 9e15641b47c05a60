"""The web catalog (`tally ui`): server-rendered pages over the catalog's library calls,
served read-only by FastAPI (tally.catalog.web.app) or written as a static site
(tally.catalog.web.build). No JavaScript build step; one small script for search as you
type."""
