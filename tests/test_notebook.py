"""The example notebook runs from top to bottom (on the small budget of SACCADE_NOTEBOOK_QUICK)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).parents[1] / "examples" / "notebooks" / "extending_priors.ipynb"


def test_extending_priors_notebook_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SACCADE_NOTEBOOK_QUICK", "1")  # the kernel inherits the environment
    # Small models gain nothing from threads, and on a busy machine extra threads only contend.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError naming the cell that failed

    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    text = "".join(output.get("text", "") for output in outputs)
    assert "its where-prior: above {'slope': 3.0}" in text
    assert "accuracy: shipped  belief   tuned" in text
    assert (tmp_path / "runs" / "above" / "checkpoint.pt").is_file()
    pictures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(pictures) >= 4  # a glimpse picture per model, the where maps, a forest plot
    assert not [output for output in outputs if output.get("output_type") == "error"]
