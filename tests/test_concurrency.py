"""Many writers at once, a busy lock, and writers killed at random moments (issue 7)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tally.catalog.spec.loading import load_project
from tally.catalog.store.fsutil import project_lock
from tally.catalog.store.paths import TEMP_PREFIX

from tests.helpers import REPO, invoke, tree_digest

WRITERS = 16  # `tally register` processes at once
METRIC_NEW_WRITERS = 4  # and `tally metric new` ones beside them (kept few: 2 cores)


def _metric_yaml(name: str) -> str:
    return (f"metrics:\n  - name: {name}\n    description: Logins, 7 days.\n"
            "    owner: a@example.com\n    source: crm_logins\n    aggregation: count\n"
            "    expression: '*'\n    window: 7d\n")


def _spawn(args: list[str], **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tally.cli.main", *args], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env},
    )


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TEMP_PREFIX}*")]


def test_sixteen_registers_and_some_metric_news_at_once(example_project: Path,
                                                           tmp_path: Path) -> None:
    project = str(example_project)
    procs = []
    for i in range(WRITERS):
        file = tmp_path / f"reg_{i:02d}.yaml"
        file.write_text(_metric_yaml(f"reg_metric_{i:02d}"))
        procs.append(_spawn(["--project", project, "register", str(file)]))
        if i >= METRIC_NEW_WRITERS:
            continue
        procs.append(_spawn([
            "--project", project, "metric", "new", "--name", f"new_metric_{i:02d}",
            "--source", "crm_logins", "--aggregation", "sum", "--expression", "seconds",
            "--window", "7d", "--owner", "b@example.com", "--description", "Seconds, 7 days.",
        ]))
    outcomes = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    for proc in procs:
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    assert all(code == 0 for code, _ in outcomes), outcomes
    assert not any("Traceback" in err for _, err in outcomes)
    # with 20 writers, some waited, and each one that did said so
    assert any("waiting for the project lock" in err for _, err in outcomes)
    metrics = load_project(example_project).metrics
    for i in range(WRITERS):
        assert f"reg_metric_{i:02d}" in metrics
        assert (f"new_metric_{i:02d}" in metrics) == (i < METRIC_NEW_WRITERS)
        assert (example_project / "metrics" / f"reg_{i:02d}.yaml").read_text() == \
            _metric_yaml(f"reg_metric_{i:02d}")
    assert _leftovers(example_project) == []
    assert invoke_code(["--project", project, "validate"]) == 0
    # written files are readable like any file the user writes (not mkstemp's 0600)
    mode = (example_project / "metrics" / "reg_00.yaml").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def invoke_code(args: list[str]) -> int:
    proc = subprocess.run([sys.executable, "-m", "tally.cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr
    return proc.returncode


def test_a_busy_lock_is_reported_and_times_out_clearly(example_project: Path,
                                                       tmp_path: Path) -> None:
    file = tmp_path / "late.yaml"
    file.write_text(_metric_yaml("late_metric"))
    before = tree_digest(example_project)
    with project_lock(example_project, timeout=0):
        proc = subprocess.run(
            [sys.executable, "-m", "tally.cli.main", "--project", str(example_project), "register",
             str(file)], cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**os.environ, "TALLY_LOCK_TIMEOUT": "1"},
        )
        new = subprocess.run(
            [sys.executable, "-m", "tally.cli.main", "--project", str(example_project), "metric",
             "new", "--name", "late_two", "--source", "crm_logins", "--aggregation", "count",
             "--expression", "*", "--window", "7d", "--owner", "a@example.com",
                 "--description", "Late."], cwd=REPO, capture_output=True, text=True,
            timeout=120, env={**os.environ, "TALLY_LOCK_TIMEOUT": "0"},
        )
    assert proc.returncode == 1, proc.stderr
    assert "waiting for the project lock" in proc.stderr
    assert "could not get the project lock" in proc.stderr
    assert "TALLY_LOCK_TIMEOUT" in proc.stderr and "Traceback" not in proc.stderr
    assert new.returncode == 1 and "could not get the project lock" in new.stderr
    assert tree_digest(example_project) == before
    # once the lock is free the same command goes through
    assert invoke_code(["--project", str(example_project), "register", str(file)]) == 0


def test_a_bad_lock_timeout_is_a_usage_error(example_project: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "x.yaml"
    file.write_text(_metric_yaml("x_metric"))
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv("TALLY_LOCK_TIMEOUT", bad)
        result = invoke(["--project", str(example_project), "register", str(file)], capsys)
        assert result.code == 2, result.stderr
        assert "TALLY_LOCK_TIMEOUT" in result.stderr
    assert not (example_project / "metrics" / "x.yaml").exists()


# -- crash safety -------------------------------------------------------------------------

def _logical(root: Path) -> dict[str, tuple[str, str]]:
    """What a reader sees: each definition's file and content."""
    return {name: (d.file, repr(d.spec)) for name, d in load_project(root).definitions.items()}


CRASH_POINTS = ["before-rename", "after-journal", "mid-commit"]


@pytest.mark.parametrize("replace", [False, True], ids=["new_file", "replace_across_files"])
def test_register_killed_at_random_moments(example_project: Path, tmp_path: Path,
                                           replace: bool,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Kill `register` at chosen points and at a randomly chosen one of its atomic writes
    (each kill checked to have landed): the project stays loadable and shows the old state
    or the new one; a rerun gives the state an uninterrupted run gives."""
    import shutil

    if replace:  # moves crm_logins_30d out of crm.yaml: two files change in one commit
        text = _metric_yaml("crm_logins_30d").replace("7d", "30d")
    else:
        text = _metric_yaml("crashy_metric")
    file = tmp_path / "crashy.yaml"
    file.write_text(text)
    tail = ["register", str(file), *(["--replace"] if replace else [])]
    args = ["--project", str(example_project), *tail]

    reference = tmp_path / "reference"
    shutil.copytree(example_project, reference)
    assert invoke(["--project", str(reference), *tail], capsys).code == 0
    expected_files = tree_digest(reference / "metrics")
    expected = _logical(reference)
    pristine = _logical(example_project)

    rng = random.Random(7 + replace)
    # the lock held and nothing written yet; then one of the run's atomic writes (the
    # journal and the two files of a replace across files; the one file of a new one)
    writes = 3 if replace else 1
    points = [*CRASH_POINTS, "locked", f"before-rename#{rng.randint(1, writes)}"]
    for point in points:
        proc = subprocess.run([sys.executable, "-m", "tally.cli.main", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "TALLY_CRASH_AT": point})
        if replace or point not in ("after-journal", "mid-commit"):  # one file: no journal
            assert proc.returncode == -signal.SIGKILL, (point, proc.stderr)
        seen = _logical(example_project)  # loadable, whatever the moment
        assert seen in (pristine, expected), point
        # the same command again finishes the job
        rerun = invoke(args, capsys)
        assert "Traceback" not in rerun.stderr
        code = rerun.code
        if replace or seen == pristine:
            assert code == 0
        else:  # the killed run had committed: the plain rerun says the file exists
            assert code == 1
        assert tree_digest(example_project / "metrics") == expected_files
        assert _logical(example_project) == expected
        assert _leftovers(example_project) == []
        assert not (example_project / ".tally" / "commit.json").exists()
        # back to the start for the next kill
        shutil.rmtree(example_project / "metrics")
        shutil.copytree(REPO / "metrics", example_project / "metrics")


def test_leftover_temp_files_are_removed_by_the_next_write(
        example_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = [example_project / "metrics" / f"{TEMP_PREFIX}abc",
             example_project / "metrics" / "sub" / f"{TEMP_PREFIX}def.yaml",
             example_project / ".tally" / f"{TEMP_PREFIX}ghi"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("metrics:\n  - name: half")
    assert invoke(["--project", str(example_project), "validate"], capsys).code == 0
    file = tmp_path / "fresh.yaml"
    file.write_text(_metric_yaml("fresh_metric"))
    assert invoke(["--project", str(example_project), "register", str(file)], capsys).code == 0
    assert not any(path.exists() for path in stale)


def test_a_half_done_multi_file_commit_is_seen_whole_and_finished(
        example_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A writer killed between the journal and the renames: readers see the commit, the next
    writer finishes it on disk."""
    import json

    crm = (example_project / "metrics" / "crm.yaml").read_text()
    moved = _metric_yaml("crm_logins_30d").replace("7d", "30d")
    from tally.catalog.spec.authoring import _without_names

    trimmed = _without_names(example_project / "metrics" / "crm.yaml", {"crm_logins_30d"})
    journal = example_project / ".tally" / "commit.json"
    journal.parent.mkdir(exist_ok=True)
    journal.write_text(json.dumps({"version": 1, "changes": {
        "metrics/moved.yaml": moved, "metrics/crm.yaml": trimmed}}))
    # the disk still has the old crm.yaml and no moved.yaml; the project reads as committed
    assert (example_project / "metrics" / "crm.yaml").read_text() == crm
    project = load_project(example_project)
    assert project.get("crm_logins_30d").file == "metrics/moved.yaml"
    other = tmp_path / "other.yaml"
    other.write_text(_metric_yaml("other_metric"))
    result = invoke(["--project", str(example_project), "register", str(other)], capsys)
    assert result.code == 0, result.stderr
    assert not journal.exists()
    assert (example_project / "metrics" / "moved.yaml").read_text() == moved
    assert "name: crm_logins_30d" not in (example_project / "metrics" / "crm.yaml").read_text()
    assert load_project(example_project).get("other_metric") is not None


def test_a_journal_pointing_outside_the_project_is_refused(
        example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    journal = example_project / ".tally" / "commit.json"
    journal.parent.mkdir(exist_ok=True)
    journal.write_text(json.dumps({"version": 1, "changes": {"../evil.yaml": "x"}}))
    result = invoke(["--project", str(example_project), "validate"], capsys)
    assert result.code == 1 and "outside the project" in result.stderr
    assert not (example_project.parent / "evil.yaml").exists()
