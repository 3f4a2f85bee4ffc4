"""Server-side batching gives the same answers as no batching, and SIGTERM drains.

`batching_server` serves the same version-1 model as `shared_server` (batching
off) with a long batch timeout, so concurrent requests are merged and a lone
request stays in flight long enough to be caught by SIGTERM.
"""

import re
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest

from serving import client
from serving.launcher import ServerProcess
from tests.serving.conftest import LEAN_FLAGS, install
from tests.serving.toy_models import expected_text_outputs

BATCH_TIMEOUT_MICROS = 250_000


@pytest.fixture(scope="module")
def batching_server(model_library, tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    install(model_library["text_v1"], str(root / "toy"), 1)
    params = root / "batching.config"
    params.write_text(f"""
# The stock server's BatchingParameters text format.
max_batch_size {{ value: 16 }}
batch_timeout_micros {{ value: {BATCH_TIMEOUT_MICROS} }}
num_batch_threads {{ value: 1 }}
max_enqueued_batches {{ value: 100 }}
pad_variable_length_inputs: false
""")
    server = ServerProcess(
        ["--model_name", "toy", "--model_base_path", str(root / "toy"), "--enable_batching",
         f"--batching_parameters_file={params}", "--monitoring", "--file_system_poll_wait_seconds=0"]
        # 16 calls at once below: each needs a gRPC thread (more are refused).
        + LEAN_FLAGS + ["--grpc_max_threads=16"], log_path=str(root / "server.log"))
    server.start()
    yield server
    server.stop()


def _metric(server, name):
    """Returns a metric of `server`, summed over its label sets."""
    with urllib.request.urlopen(server.rest_url + "/monitoring/prometheus/metrics", timeout=30) as reply:
        text = reply.read().decode()
    return sum(float(v) for v in re.findall("^" + re.escape(name) + r"\{[^}]*\} (\S+)$", text, re.M))


def _concurrently(calls):
    """Runs zero-argument callables at once; returns their results (or exceptions) in order."""
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index):
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # Reported to the caller, never lost.
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.mark.slow
def test_batching_matches_unbatched_answers(batching_server, shared_server):
    requests = [[f"text {i} " + "x" * j for j in range(1 + i % 3)] for i in range(12)]
    ids = [np.arange(4 * (1 + i % 2), dtype=np.int32).reshape(-1, 4) + i for i in range(4)]
    batches_before = _metric(batching_server, ":tensorflow:serving:batching_session:processed_batch_size_count")
    with grpc.insecure_channel(batching_server.grpc_target) as on, \
            grpc.insecure_channel(shared_server.grpc_target) as off:
        calls = [lambda t=t: client.predict(on, "toy", {"text": t})[0] for t in requests]
        calls += [lambda x=x: client.predict(on, "toy", {"ids": x}, signature="score_ids")[0] for x in ids]
        batched = _concurrently(calls)
        for texts, outputs in zip(requests, batched):
            assert not isinstance(outputs, Exception), outputs
            unbatched, version = client.predict(off, "toy", {"text": texts}, version=1)
            assert version == 1
            for name in ("probabilities", "label", "model_version"):
                np.testing.assert_array_equal(outputs[name], unbatched[name])
            np.testing.assert_allclose(outputs["probabilities"],
                                       expected_text_outputs(texts)["probabilities"], rtol=1e-5, atol=1e-6)
        for x, outputs in zip(ids, batched[len(requests):]):
            assert not isinstance(outputs, Exception), outputs
            assert outputs["total"].tolist() == x.sum(axis=1).tolist()
    batches = _metric(batching_server, ":tensorflow:serving:batching_session:processed_batch_size_count")
    # 16 requests ran as fewer model calls: they were merged.
    assert 2 <= batches - batches_before < len(calls)


@pytest.mark.slow
def test_bad_request_in_a_batch_fails_alone(batching_server):
    with grpc.insecure_channel(batching_server.grpc_target) as channel:
        good = [lambda i=i: client.predict(channel, "toy", {"data": [f"ok {i}".encode()]},
                                           signature="decode")[0]["num_chars"].tolist() for i in range(4)]
        bad = [lambda: client.predict(channel, "toy", {"data": [b"\xff"]}, signature="decode")]
        results = _concurrently(good + bad)
    assert results[:4] == [[4]] * 4
    assert isinstance(results[4], grpc.RpcError)
    assert results[4].code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.slow
def test_sigterm_finishes_in_flight_request_and_exits_zero(batching_server):
    counter = ":tensorflow:serving:batching_session:requests"
    with grpc.insecure_channel(batching_server.grpc_target) as channel:
        client.predict_text(channel, "toy", ["connect first"])
        queued = _metric(batching_server, counter)
        result = {}
        thread = threading.Thread(
            target=lambda: result.update(out=_concurrently([lambda: client.predict_text(channel, "toy", ["late"])])))
        thread.start()
        deadline = time.monotonic() + 30
        while _metric(batching_server, counter) <= queued:  # Now waiting in the batch queue.
            assert time.monotonic() < deadline, "the request never reached the batch queue"
            time.sleep(0.01)
        batching_server.process.send_signal(15)
        thread.join(timeout=60)
        exit_code = batching_server.process.wait(timeout=60)
    (outputs,) = result["out"]
    assert not isinstance(outputs, Exception), outputs
    assert outputs["label"].tolist() == [b"negative"]
    assert exit_code == 0
    assert "Received SIGTERM; shutting down" in batching_server.log_text()
    with pytest.raises(grpc.RpcError) as info:
        client.predict_text(batching_server.grpc_target, "toy", ["after exit"], timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
