"""Fixtures of the web catalog tests: a small computed demo project (one description holds
a script), `tally ui` serving it on a free port, and its static build."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, run_tally

METRIC = "crm_monthly_active_users"
OWNER = "crm-analytics@example.com"
SCORE = "net_adoption_score"
HOSTILE = ('<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
           '</textarea>&amp;')
DESCRIPTION = "Distinct users who logged in to CRM in the trailing 30 days."


@pytest.fixture(scope="session")
def web_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example definitions over 40 generated accounts, checked and computed."""
    from tally.catalog.compute.runner import compute
    from tally.catalog.contracts.checks import gate
    from tally.catalog.spec.authoring import init_project
    from tally.catalog.spec.loading import load_project
    from tally.feature_repo.demo_data import generate

    root = tmp_path_factory.mktemp("web") / "project"
    root.mkdir()
    init_project(root, name="web_demo")
    (root / "metrics" / "example.yaml").unlink()
    for path in sorted((REPO / "metrics").glob("*.yaml")):
        shutil.copy(path, root / "metrics" / path.name)
    crm = root / "metrics" / "crm.yaml"
    text = crm.read_text()
    assert f"description: {DESCRIPTION}" in text
    hostile = (DESCRIPTION + " " + HOSTILE).replace("'", "''")
    crm.write_text(text.replace(f"description: {DESCRIPTION}", f"description: '{hostile}'"))
    data = generate(root / "data", accounts=40)
    project = load_project(root)
    gate(project, None, as_of=data.end)
    compute(project)
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    base: str
    root: Path
    process: subprocess.Popen[str]


@pytest.fixture(scope="session")
def web_server(web_project: Path) -> Iterator[Served]:
    """`tally ui` on a free port; ready once it says it is serving."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tally.cli.main", "-p", str(web_project), "ui", "--port",
         str(port)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith("serving the catalog"):
            break
    else:
        raise AssertionError(f"tally ui did not start: {''.join(lines)}")
    try:
        yield Served(f"http://127.0.0.1:{port}", web_project, process)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def static_site(web_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "catalog"
    result = run_tally(["-p", str(web_project), "ui", "--build", str(out)])
    assert result.code == 0, result.stderr
    return out


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Reply:
    """One HTTP request; error statuses are replies too."""
    request = urllib.request.Request(url, method=method, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=60) as response:
            return Reply(response.status, dict(response.headers), response.read().decode())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read().decode())
