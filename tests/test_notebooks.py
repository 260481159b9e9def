"""The Colab notebooks: committed without outputs, a badge and a Colab-only install first, and
each executes top to bottom on CPU with the small settings (`KERASSEG_NOTEBOOK_SMALL=1`)."""

import json
import sys

import nbformat
import pytest
from conftest import REPO
from nbclient import NotebookClient

sys.path.insert(0, str(REPO / "notebooks"))
import badges  # noqa: E402

NOTEBOOKS = badges.notebooks()
EXPECTED = [
    "01_quick_start.ipynb",
    "02_train_on_your_data.ipynb",
    "03_classical_layers.ipynb",
    "04_export_tf_serving.ipynb",
    "05_mask_rcnn.ipynb",
]


def test_the_five_notebooks_are_there():
    assert [path.name for path in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    notebook = json.loads(path.read_text())
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {index} of {path.name} keeps its outputs"
            assert cell["execution_count"] is None, f"cell {index} of {path.name}"
    first, install = notebook["cells"][0], notebook["cells"][1]
    title = "".join(first["source"])
    assert first["cell_type"] == "markdown" and title.startswith("# ")
    assert badges.badge(path.name) in title, "run `python notebooks/badges.py`"
    code = "".join(install["source"])
    assert install["cell_type"] == "code"
    assert '"google.colab" in sys.modules' in code and "%pip install" in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("KERASSEG_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("KERASSEG_DATA", str(REPO.parent / "shared" / "data"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
    figures = sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert figures >= 1, f"{path.name} drew no figure"
