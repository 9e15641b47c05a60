"""docs/notebooks/quickstart.ipynb runs from top to bottom (a failing cell fails the test),
on any project (PROJECT at the top; default a fresh demo), and its saved outputs hold no
colour codes or warnings."""

from __future__ import annotations

from typing import Any

import nbclient
import nbformat

from tests.helpers import REPO

NOTEBOOK = REPO / "docs" / "notebooks" / "quickstart.ipynb"


def _texts(notebook: Any) -> list[str]:
    out = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            out.append(str(output.get("text", "")))
            out += [str(v) for k, v in output.get("data", {}).items() if k.startswith("text/")]
    return out


def _clean(notebook: Any) -> None:
    texts = _texts(notebook)
    assert not [t for t in texts if "\x1b[" in t], "colour codes in the outputs"
    assert not [t for t in texts if "Warning" in t], "warnings in the outputs"
    streams = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
               if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert streams == []


def test_saved_notebook_points_at_a_project_and_has_clean_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first = next(c for c in notebook.cells if c.cell_type == "code")
    assert first.source.startswith("PROJECT = None")
    source = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    for call in ("explain(", "segments(", "compute(", "training_frame("):
        assert call in source
    _clean(notebook)


def test_quickstart_notebook_executes() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()  # raises CellExecutionError, naming the cell, when any cell fails
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # explain, metric, funnel
    assert any("held back by" in t for t in _texts(notebook))  # segments ran
    _clean(notebook)
