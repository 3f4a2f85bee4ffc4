"""Helpers to check that a SavedModel uses only ops the stock model server knows.

The stock `tensorflow_model_server` links TensorFlow and tensorflow-text of the 2.12
era; a graph with an op added since then fails to load there ("Op type not
registered"). `tests/fixtures/serving_op_allowlist.txt` lists every op that
tensorflow 2.12 + tensorflow-text 2.12 register (made by
`tests/fixtures/make_serving_op_allowlist.py`).

- `load_allowlist(path=None)`: that list as a set.
- `saved_model_ops(export_dir)`: every op type in a SavedModel, read from
  `saved_model.pb` without loading the model (so it works for graphs with ops that
  the running TensorFlow does not have).
- `check_ops(export_dir, allowlist=None)`: the sorted ops of the SavedModel that are
  not in the allowlist (empty when the model can be served).

Only op names are checked, not attributes. `tf.saved_model.save` strips attributes
that hold their default value, so attributes added after 2.12 rarely appear; one that
does is `debug_name` on `VarHandleOp` (TF 2.21 sets it), and TF 2.12's SavedModel
loaders (v1 and v2) were seen to accept such a graph.
"""

import pathlib

from tensorflow.core.protobuf import saved_model_pb2

ALLOWLIST_PATH = pathlib.Path(__file__).parent / "fixtures" / "serving_op_allowlist.txt"

_allowlist_cache = {}


def load_allowlist(path=None):
    """Returns the set of op names in the allowlist file (skipping `#` lines)."""
    path = pathlib.Path(path) if path is not None else ALLOWLIST_PATH
    key = str(path.resolve())
    if key not in _allowlist_cache:
        names = set()
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                names.add(line)
        _allowlist_cache[key] = frozenset(names)
    return set(_allowlist_cache[key])


def _read_saved_model(export_dir):
    export_dir = pathlib.Path(export_dir)
    pb = export_dir / "saved_model.pb"
    if not pb.exists():
        if (export_dir / "saved_model.pbtxt").exists():
            raise ValueError(f"{export_dir}: text SavedModels (saved_model.pbtxt) are not supported")
        raise FileNotFoundError(f"no saved_model.pb in {export_dir}")
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(pb.read_bytes())
    return saved_model


def saved_model_ops(export_dir):
    """Returns the set of op types used anywhere in the SavedModel at `export_dir`.

    Looks at the nodes of every meta graph's `graph_def` and of every function in its
    function library. A node whose `op` names a library function is a call to that
    function, not an op, and is left out (the function's own nodes are counted).
    """
    saved_model = _read_saved_model(export_dir)
    ops = set()
    function_names = set()
    for meta_graph in saved_model.meta_graphs:
        graph_def = meta_graph.graph_def
        library = graph_def.library
        function_names.update(f.signature.name for f in library.function)
        ops.update(node.op for node in graph_def.node)
        for function in library.function:
            ops.update(node.op for node in function.node_def)
    return ops - function_names


def check_ops(export_dir, allowlist=None):
    """Returns the sorted ops of the SavedModel at `export_dir` not in `allowlist`.

    `allowlist` is an iterable of op names; by default, `load_allowlist()`.
    """
    allowed = load_allowlist() if allowlist is None else set(allowlist)
    return sorted(saved_model_ops(export_dir) - allowed)
