"""Pure pieces of the server, tested in-process without a server."""

import ast
import pathlib
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving import batching, client, model_manager, rest
from serving.errors import ServingError
from tests.serving import toy_models

SERVING_DIR = pathlib.Path(__file__).resolve().parents[2] / "serving"


def test_serving_never_imports_the_library():
    # tensorflow_text: registers the text ops that raw-text exports use, as the stock server links them.
    allowed_roots = {"tensorflow", "tensorflow_text", "tensorflow_serving", "grpc", "google", "numpy",
                     "serving"}
    import sys

    stdlib = set(sys.stdlib_module_names)
    for path in SERVING_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in allowed_roots | stdlib, f"{path.name} imports {root}"


# ---- batching ------------------------------------------------------------------


def test_parse_batching_parameters_stock_and_short_forms():
    params = batching.parse_batching_parameters("""
        max_batch_size { value: 64 }   # stock wrapper form
        batch_timeout_micros: 500
        allowed_batch_sizes: 8         # stock, ignored here
        num_batch_threads { value: 3 }
    """)
    assert params == batching.BatchingParameters(max_batch_size=64, batch_timeout_micros=500,
                                                 num_batch_threads=3)
    with pytest.raises(ValueError, match="unknown batching parameter 'max_batchsize'"):
        batching.parse_batching_parameters("max_batchsize { value: 2 }")
    with pytest.raises(ValueError, match="integer"):
        batching.parse_batching_parameters("max_batch_size { value: many }")


def test_batch_signature():
    key = batching.batch_signature({"a": np.zeros((3, 4)), "b": np.zeros((3,), object)})
    assert key[0] == 3
    assert batching.batch_signature({"a": np.zeros((3, 4)), "b": np.zeros((2,))}) is None
    assert batching.batch_signature({"a": np.float32(1)}) is None


class _Model:
    """run_fn that doubles `x` and records the batch sizes it was called with."""

    def __init__(self, fail_on=None, unsplittable=False):
        self.calls = []
        self.fail_on = fail_on
        self.unsplittable = unsplittable
        self.lock = threading.Lock()

    def __call__(self, inputs):
        x = inputs["x"]
        with self.lock:
            self.calls.append(len(x))
        if self.fail_on is not None and self.fail_on in x:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"bad value {self.fail_on}")
        out = {"y": x * 2}
        if self.unsplittable:
            out["total"] = np.sum(x)
        return out


def _submit_concurrently(scheduler, model, arrays):
    results = [None] * len(arrays)
    barrier = threading.Barrier(len(arrays))

    def run(i):
        barrier.wait()
        try:
            results[i] = scheduler.run("m", model, {"x": arrays[i]})
        except ServingError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(arrays))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_scheduler_merges_and_splits():
    scheduler = batching.BatchScheduler(batching.BatchingParameters(
        max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1))
    model = _Model()
    arrays = [np.arange(i, i + 1 + i % 2, dtype=np.float32) for i in range(6)]  # 9 rows
    try:
        results = _submit_concurrently(scheduler, model, arrays)
    finally:
        scheduler.stop()
    for x, result in zip(arrays, results):
        np.testing.assert_array_equal(result["y"], x * 2)
    assert sum(model.calls) == 9 and len(model.calls) < 6 and max(model.calls) <= 8


def test_scheduler_isolates_failures_and_unsplittable_outputs():
    params = batching.BatchingParameters(max_batch_size=8, batch_timeout_micros=100_000)
    scheduler = batching.BatchScheduler(params)
    try:
        results = _submit_concurrently(scheduler, _Model(fail_on=13.0),
                                       [np.array([1.0]), np.array([13.0]), np.array([2.0])])
        assert results[0]["y"].tolist() == [2.0] and results[2]["y"].tolist() == [4.0]
        assert isinstance(results[1], ServingError) and "13" in results[1].message
        # A scalar output cannot be split by rows: each request is re-run alone.
        results = _submit_concurrently(scheduler, _Model(unsplittable=True),
                                       [np.array([1.0, 2.0]), np.array([5.0])])
        assert [r["total"] for r in results] == [3.0, 5.0]
    finally:
        scheduler.stop()


def test_scheduler_runs_a_ready_batch_on_the_caller_thread_within_the_thread_bound():
    scheduler = batching.BatchScheduler(batching.BatchingParameters(
        max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1))
    seen, running, most = [], [0], [0]
    lock = threading.Lock()

    def model(inputs):
        with lock:
            seen.append(threading.current_thread().name)
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return {"y": inputs["x"] * 2}

    try:
        assert scheduler.run("m", model, {"x": np.array([1.0])})["y"].tolist() == [2.0]
        assert seen == [threading.current_thread().name]  # No hand-off to a batch thread.
        arrays = [np.array([float(i)]) for i in range(6)]
        results = _submit_concurrently(scheduler, model, arrays)
    finally:
        scheduler.stop()
    assert [r["y"].tolist() for r in results] == [[2.0 * i] for i in range(6)]
    assert most[0] == 1  # num_batch_threads still bounds the batches running at once.


def test_scheduler_queue_full_is_unavailable():
    scheduler = batching.BatchScheduler(batching.BatchingParameters(
        max_batch_size=2, max_enqueued_batches=1, batch_timeout_micros=2_000_000, num_batch_threads=1))
    gate = threading.Event()

    def slow(inputs):
        gate.wait(10)
        return {"y": inputs["x"]}

    try:
        first = threading.Thread(target=lambda: scheduler.run("m", slow, {"x": np.zeros(2)}))
        first.start()  # Fills the queue (2 rows = 1 batch) until the worker takes it.
        time.sleep(0.05)
        second = threading.Thread(target=lambda: scheduler.run("m", slow, {"x": np.zeros(2)}))
        second.start()  # The worker is busy with the first; this one waits in the queue.
        time.sleep(0.05)
        with pytest.raises(ServingError) as info:
            scheduler.run("m", slow, {"x": np.zeros(1)})
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        gate.set()
        scheduler.stop()


# ---- model config and versions -------------------------------------------------


@pytest.mark.parametrize("texts", [["hi"], ["h\u00e9llo \u4e16\u754c", ""], [b"raw \xff", "x"], []])
def test_text_tensor_proto_is_what_make_tensor_proto_builds(texts):
    # The bytes on the wire must not change: the old path went through tf.constant.
    expected = tf.make_tensor_proto(tf.constant(texts, tf.string))
    assert client.text_tensor_proto(texts).SerializeToString() == expected.SerializeToString()
    with pytest.raises(TypeError, match="'text_b' element 1: expected str or bytes, got int"):
        client.text_tensor_proto(["ok", 3], "text_b")


def test_parse_model_config():
    config = model_manager.parse_model_config_text("""
        model_config_list {
          config {
            name: "bert" base_path: "/models/bert" model_platform: "tensorflow"
            model_version_policy { specific { versions: 1 versions: 3 } }
            version_labels { key: "stable" value: 1 }
          }
        }""")
    (model,) = config.model_config_list.config
    assert model.version_labels["stable"] == 1
    assert model_manager.desired_versions(model, [1, 2, 3, 4]) == {1, 3}
    for bad, word in (('config { name: "a" base_path: "/a" model_platform: "onnx" }', "onnx"),
                      ('config { name: "a" base_path: "/a" } config { name: "a" base_path: "/b" }', "twice"),
                      ('config { name: "a" }', "base_path")):
        with pytest.raises(ServingError, match=word):
            model_manager.parse_model_config_text("model_config_list { %s }" % bad)
    with pytest.raises(ServingError, match="text proto"):
        model_manager.parse_model_config_text("model_config_list { nonsense }")


def test_desired_versions_policies():
    config = model_manager.single_model_config("m", "/m").model_config_list.config[0]
    assert model_manager.desired_versions(config, [1, 5, 3]) == {5}
    config.model_version_policy.latest.num_versions = 2
    assert model_manager.desired_versions(config, [1, 5, 3]) == {5, 3}
    config.model_version_policy.all.SetInParent()
    assert model_manager.desired_versions(config, [1, 5, 3]) == {1, 3, 5}
    assert model_manager.desired_versions(config, []) == set()


def test_list_versions_and_fingerprint(tmp_path):
    for name in ("1", "10", "tmp", ".staging-2"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a version folder")
    assert sorted(model_manager.list_versions(str(tmp_path))) == [1, 10]
    before = model_manager.folder_fingerprint(str(tmp_path / "1"))
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"x")
    assert model_manager.folder_fingerprint(str(tmp_path / "1")) != before


def test_tf2_signature_method_name_rewrite(tmp_path):
    # TF2 save always writes tensorflow/serving/predict; rewriting the proto is a
    # working alternative to the TF1 Builder for Classify/Regress signatures.
    path = toy_models.build_text_model(str(tmp_path / "1"), warmup_texts=None)
    assert model_manager.read_signature_defs(path, ["serve"])["pair"].method_name == \
        "tensorflow/serving/predict"
    toy_models.rewrite_method_name(path, "pair", "tensorflow/serving/classify")
    servable = model_manager.load_servable("m", 1, path)
    assert servable.signature_defs["pair"].method_name == "tensorflow/serving/classify"
    signature_def, function = servable.signature("pair")
    assert function(text=tf.constant(["a"]), text_b=tf.constant(["b"]))["label"].numpy().tolist() == [b"negative"]


# ---- REST JSON conversion ------------------------------------------------------


def test_json_to_array():
    array = rest.json_to_array([["a", {"b64": "/w=="}]], tf.string, "t")
    assert array.shape == (1, 2) and array.tolist() == [[b"a", b"\xff"]]
    np.testing.assert_array_equal(rest.json_to_array([[1, 2], [3, 4]], tf.int64, "i"), [[1, 2], [3, 4]])
    assert rest.json_to_array([1, 2.5], tf.float32, "f").dtype == np.float32
    for value, dtype, word in (([[1], [1, 2]], tf.int32, "ragged"), ([True], tf.int32, "int32"),
                               ([1], tf.string, "is not of expected type: string"), ([2 ** 40], tf.int32, "fit"),
                               ([{"b64": "***"}], tf.string, "base64")):
        with pytest.raises(ServingError, match=word):
            rest.json_to_array(value, dtype, "x")


def test_array_to_json_b64_for_bytes_outputs():
    array = np.array([b"ok", b"\xff"], dtype=object)
    assert rest.array_to_json("label", array) == ["ok", {"b64": "/w=="}]
    assert rest.array_to_json("raw_bytes", array[:1]) == [{"b64": "b2s="}]


# ---- flags ---------------------------------------------------------------------


def test_flags_parse_like_the_stock_server(tmp_path):
    from serving import server

    assert server.parse_options([]) == server.ServerOptions()
    options = server.parse_options(["--port=9000", "--enable_batching", "--monitoring=false",
                                    "--file_system_poll_wait_seconds", "0.5", "--max_batch_size=8"])
    assert (options.port, options.enable_batching, options.monitoring) == (9000, True, False)
    assert options.file_system_poll_wait_seconds == 0.5
    assert server.batching_parameters(options).max_batch_size == 8
    assert dict(server.grpc_options("grpc.max_receive_message_length=10,grpc.x=y")) == {
        "grpc.max_receive_message_length": 10, "grpc.max_send_message_length": 64 << 20,
        "grpc.so_reuseport": 0, "grpc.x": "y"}
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }')
    assert server.monitoring_path(server.parse_options([f"--monitoring_config_file={monitoring}"])) == "/metrics"


def test_server_refuses_a_bad_config_before_listening(tmp_path):
    from serving import server

    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "m" base_path: "/m" model_platform: "onnx" } }')
    with pytest.raises(ServingError, match="onnx"):
        server.ModelServer(server.parse_options([f"--model_config_file={config}"]))
    with pytest.raises(ValueError, match="model_base_path"):
        server.ModelServer(server.parse_options([]))
