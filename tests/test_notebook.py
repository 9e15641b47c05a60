"""docs/notebooks/quickstart.ipynb runs from top to bottom (a failing cell fails the test)."""

from __future__ import annotations

import nbclient
import nbformat

from tests.helpers import REPO

NOTEBOOK = REPO / "docs" / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel starts in the checkout so `import catalog` finds it even when an editable
    # install is stale; the notebook itself writes only to a temp folder
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()  # raises CellExecutionError, naming the cell, when any cell fails
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot was drawn
