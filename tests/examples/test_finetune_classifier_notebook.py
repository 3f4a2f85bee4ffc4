"""`examples/finetune_classifier.ipynb` runs top to bottom on a real Jupyter kernel.

The notebook's parameters are overridden as papermill does (a cell inserted after the
one tagged `parameters`) to point at a tiny random encoder, so the run takes seconds.
A cell that raises fails the test. The kernel is this interpreter: a `python3`
kernel spec naming `sys.executable` comes first on `JUPYTER_PATH`, and a last,
injected cell checks which Python the kernel ran.
"""

import json
import os
import pathlib
import sys

import nbclient
import nbformat

from tests.components.test_finetune import write_random_init

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "finetune_classifier.ipynb"


def _inject_parameters(notebook, values):
    index = next(i for i, cell in enumerate(notebook.cells)
                 if "parameters" in cell.get("metadata", {}).get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(index + 1, cell)


def _stream_text(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_notebook_runs_top_to_bottom_on_a_tiny_model(tmp_path, monkeypatch):
    init = write_random_init(tmp_path)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    _inject_parameters(notebook, {"INIT_CHECKPOINT": init, "OUTPUT_DIR": str(tmp_path / "out"),
                                  "EPOCHS": 2, "MAX_SEQ_LENGTH": 32, "BATCH_SIZE": 16,
                                  "START_SERVER": True})
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # The kernel imports this tree's packages whether or not the project is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError naming the cell that failed

    kernel_python = _stream_text(notebook.cells[-1]).strip()
    assert os.path.realpath(kernel_python) == os.path.realpath(sys.executable)
    outputs = {i: _stream_text(cell) for i, cell in enumerate(notebook.cells)
               if cell.cell_type == "code"}
    text = "\n".join(outputs.values())
    assert "36 train and 12 dev examples; labels ['files', 'math', 'network']" in text
    assert "39 loaded, 2 missing [classifier.weight, classifier.bias]" in text
    exports = list((tmp_path / "out" / "models" / "topics").iterdir())
    assert [p.name for p in exports] == ["1"] and (exports[0] / "saved_model.pb").exists()
    assert list((tmp_path / "out" / "logs").rglob("events.out.tfevents.*"))
    # The server cell ran and printed one label per text.
    server_cell = outputs[max(outputs) - 1]
    assert len([line for line in server_cell.splitlines() if line.strip()]) == 3
