"""`tally ui`: the web catalog, served read-only on 127.0.0.1 or written as a static site."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from tally.catalog.errors import TallyError, UsageError
from tally.cli.common import err, project_root

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise TallyError(f"cannot listen on {host}:{port} ({exc.strerror}); give another "
                             "--port, or a --host this machine has") from None


def _build(build: Path, explain_limit: int) -> None:
    from rich.console import Console
    from rich.progress import Progress
    from tally.catalog.web.build import build_site

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("writing pages", total=None)

        def advance(page: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=page[:40])

        report = build_site(project_root(), build, explain_limit=explain_limit, on_page=advance)
    err(f"wrote {report.pages} pages ({report.explanations} score explanations) to "
        f"{report.folder}; open {report.folder / 'index.html'} or publish the folder")


def ui(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (default: this "
                                      "machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8765,
    build: Annotated[Path | None, typer.Option(
        "--build", help="Write the catalog as a static site into this folder instead.")] = None,
    explain_limit: Annotated[int, typer.Option(
        "--explain-limit", help="With --build: explanation pages per score, at most.")] = 500,
) -> None:
    """The web catalog: search, one page per definition, lineage, scores, reuse."""
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: give a port between 1 and 65535")
    if explain_limit < 0:
        raise UsageError("--explain-limit must be 0 or more")
    if build is not None:
        _build(build, explain_limit)
        return
    import uvicorn
    from tally.catalog.web.app import LOOPBACK_HOSTS, create_app

    hosts = LOOPBACK_HOSTS if host in _LOOPBACK else ["*"] if host in ("0.0.0.0", "::") else [
        host, *LOOPBACK_HOSTS]
    app = create_app(project_root(), allowed_hosts=hosts)  # invalid definitions: exit 1
    _check_port(host, port)
    shown = f"[{host}]" if ":" in host else host
    ready = (f"serving the catalog of {project_root().resolve()} at http://{shown}:{port}/ "
             "(read only; Ctrl+C stops)")

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:  # listening now: say so (tests wait for this line)
                err(ready)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            server_header=False, access_log=False)
    Server(config).run()


def register_commands(app: typer.Typer) -> None:
    app.command()(ui)
