"""Faults on a real server: broken versions on disk, overload, idle connections.

One server process with two models:

* `rollout`: a model with an asset (a vocabulary file the lookup table reads at
  load). Broken versions (a truncated variables file, a missing asset) are dropped
  next to the good one; the good one must keep serving and the status APIs must
  report each broken one in state END with its error.
* `busy`: a batching model behind a small bounded queue; 64 concurrent clients push
  it past what it can queue. Work it cannot queue must be refused at once
  (UNAVAILABLE / RESOURCE_EXHAUSTED, as the stock server), accepted requests must
  keep a bounded latency, memory must stay flat and the server must not crash.

Run with `-s` to see the overload numbers.
"""

import os
import shutil
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving import client
from serving.launcher import ServerProcess
from tests.serving import toy_models
from tests.serving.conftest import install, wait_for

VOCAB = ["[UNK]", "hello", "world", "served"]
CLIENTS = 64
STORM_S = 4.0
MAX_BATCH, MAX_ENQUEUED, GRPC_THREADS = 4, 2, 16
REST_LIMIT = 65536


class _AssetModel(tf.Module):
    """ids = vocabulary lookup of each text (an asset); version baked in."""

    def __init__(self, vocab_path, version):
        super().__init__()
        self.vocab = tf.saved_model.Asset(vocab_path)
        self.table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            vocab_path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=0)
        self.scale = tf.Variable(np.arange(256, dtype=np.float32), name="scale")
        self.version = tf.constant(version, tf.int64)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        ids = self.table.lookup(text)  # (batch,)
        return {"ids": ids, "model_version": tf.fill(tf.shape(ids), self.version),
                "scaled": tf.gather(self.scale, ids)}


def build_asset_model(export_dir, version):
    """Writes the asset model (a version folder) and returns it."""
    vocab_path = os.path.join(os.path.dirname(export_dir), f"vocab-{version}.txt")
    with open(vocab_path, "w", encoding="utf-8") as f:
        f.write("\n".join(VOCAB) + "\n")
    module = _AssetModel(vocab_path, version)
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
    return export_dir


def _truncate_variables(version_dir):
    path = os.path.join(version_dir, "variables", "variables.data-00000-of-00001")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _remove_asset(version_dir):
    os.remove(os.path.join(version_dir, "assets", "vocab-3.txt"))


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    library = root / "library"
    library.mkdir()
    versions = {v: build_asset_model(str(library / str(v)), v) for v in (1, 2, 3)}
    busy = toy_models.build_text_model(str(library / "busy"), version=1, dense_layers=3, width=256)
    install(versions[1], str(root / "rollout"), 1)
    install(busy, str(root / "busy"), 1)
    config = root / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{ name: "rollout" base_path: "{root / 'rollout'}" model_platform: "tensorflow" }}
  config {{ name: "busy" base_path: "{root / 'busy'}" model_platform: "tensorflow" }}
}}
""")
    server = ServerProcess(
        ["--model_config_file", str(config), "--file_system_poll_wait_seconds=0.2",
         "--enable_batching", f"--max_batch_size={MAX_BATCH}",
         f"--max_enqueued_batches={MAX_ENQUEUED}", "--num_batch_threads=1",
         "--batch_timeout_micros=2000", f"--grpc_max_threads={GRPC_THREADS}",
         f"--rest_api_max_body_bytes={REST_LIMIT}", "--rest_api_timeout_in_ms=20000",
         "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"],
        log_path=str(root / "server.log"))
    server.start()
    server.root = root
    server.library = versions
    yield server
    server.stop()
    assert server.process.returncode == 0, server.log_text()[-3000:]


def _status_of(server, version):
    return next((s for s in client.model_status(server.grpc_target, "rollout")
                 if s["version"] == version and s["state"] == "END"), None)


def _served_version(server):
    outputs, version = client.predict(server.grpc_target, "rollout", {"text": ["hello", "nope"]})
    assert outputs["ids"].tolist() == [1, 0]
    assert outputs["model_version"].tolist() == [version, version]
    return version


@pytest.mark.parametrize("version,damage,expected", [
    (2, _truncate_variables, "Read less bytes than requested"),
    (3, _remove_asset, "vocab-3.txt"),
])
def test_broken_version_keeps_the_last_good_one_serving(fault_server, version, damage, expected):
    assert _served_version(fault_server) == 1
    staging = os.path.join(fault_server.root, f"staging-{version}")
    shutil.copytree(fault_server.library[version], staging)
    damage(staging)
    os.rename(staging, os.path.join(fault_server.root, "rollout", str(version)))
    status = wait_for(lambda: _status_of(fault_server, version), what=f"version {version} to fail")
    # As the stock server: state END with the load error; the message says what broke.
    assert status["error_code"] not in ("OK", "0") and expected in status["error_message"], status
    assert os.path.join("rollout", str(version)) in status["error_message"], status
    rest = client.rest_model_status(fault_server.rest_url, "rollout")["model_version_status"]
    (broken,) = [s for s in rest if s["version"] == str(version)]
    assert broken["state"] == "END" and broken["status"]["error_code"] != "OK", rest
    assert expected in broken["status"]["error_message"], rest
    (good,) = [s for s in rest if s["version"] == "1"]
    assert good["state"] == "AVAILABLE", rest
    # The previous version keeps answering, also after more polls.
    for _ in range(5):
        assert _served_version(fault_server) == 1
        time.sleep(0.1)


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class _Storm:
    """CLIENTS closed-loop clients (most gRPC, some REST) for STORM_S seconds."""

    def __init__(self, server):
        self.server = server
        self.accepted, self.refused, self.errors = [], [], []
        self.codes = {}
        self.details = set()
        self.lock = threading.Lock()

    def _grpc_client(self, stop):
        with grpc.insecure_channel(self.server.grpc_target) as channel:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    outputs, _ = client.predict(channel, "busy", {"text": ["overload"]}, timeout=30)
                    assert outputs["model_version"].tolist() == [1]
                    self._add(self.accepted, time.perf_counter() - start)
                except grpc.RpcError as exc:
                    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                        self._add(self.refused, time.perf_counter() - start, exc.code().name)
                        self.details.add(exc.details())
                        time.sleep(0.005)  # A client backs off a little before retrying.
                    else:
                        self._add(self.errors, f"{exc.code()}: {exc.details()}")
                except Exception as exc:  # Any other failure is a failure.
                    self._add(self.errors, repr(exc))

    def _rest_client(self, stop):
        while not stop.is_set():
            start = time.perf_counter()
            try:
                (prediction,) = client.rest_predict(self.server.rest_url, "busy", ["overload"])
                assert prediction["model_version"] == 1
                self._add(self.accepted, time.perf_counter() - start)
            except client.RestError as exc:
                if exc.status in (429, 503):
                    self._add(self.refused, time.perf_counter() - start, f"HTTP {exc.status}")
                    time.sleep(0.005)
                else:
                    self._add(self.errors, f"{exc.status}: {exc}")
            except Exception as exc:
                self._add(self.errors, repr(exc))

    def _add(self, bucket, value, code=None):
        with self.lock:
            bucket.append(value)
            if code:
                self.codes[code] = self.codes.get(code, 0) + 1

    def run(self, rest_clients=8):
        stop = threading.Event()
        threads = [threading.Thread(target=self._rest_client if i < rest_clients else self._grpc_client,
                                    args=(stop,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(STORM_S)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


def _idle_connections(server, count=4):
    """Connections that are opened and never send a byte (or only half a request)."""
    sockets = []
    for port in (server.grpc_port, server.rest_port):
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if port == server.rest_port and i % 2:
                s.sendall(b"POST /v1/models/busy:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
            sockets.append(s)
    return sockets


@pytest.mark.slow
def test_overload_refuses_at_once_and_keeps_latency_and_memory_bounded(fault_server):
    pid = fault_server.process.pid
    # Warm up both front ends, then take the baseline memory.
    for _ in range(20):
        client.predict(fault_server.grpc_target, "busy", {"text": ["warm"]})
        client.rest_predict(fault_server.rest_url, "busy", ["warm"])
    baseline = _rss_kib(pid)
    idle = _idle_connections(fault_server)
    peak = [baseline]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], _rss_kib(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    storm = _Storm(fault_server)
    try:
        storm.run()
    finally:
        sampling.set()
        sampler.join()
    # A REST body over the limit is refused with 413 while the idle connections hang on.
    with pytest.raises(client.RestError) as excinfo:
        client.rest_call(f"{fault_server.rest_url}/v1/models/busy:predict",
                         {"instances": ["x" * (REST_LIMIT + 1)]})
    assert excinfo.value.status == 413
    # The idle connections block nobody: a fresh request is answered at once.
    start = time.perf_counter()
    client.predict(fault_server.grpc_target, "busy", {"text": ["after"]}, timeout=10)
    client.rest_predict(fault_server.rest_url, "busy", ["after"], timeout=10)
    after_s = time.perf_counter() - start
    for s in idle:
        s.close()

    accepted = np.array(storm.accepted)
    refused = np.array(storm.refused)
    p99 = float(np.percentile(accepted, 99)) if len(accepted) else float("nan")
    refused_p99 = float(np.percentile(refused, 99)) if len(refused) else float("nan")
    print(f"\n[overload] {CLIENTS} clients for {STORM_S:.0f} s: accepted {len(accepted)}, "
          f"refused {len(refused)} {storm.codes}, other errors {len(storm.errors)}; accepted p50 "
          f"{np.median(accepted) * 1000:.0f} ms p99 {p99 * 1000:.0f} ms; refused p99 "
          f"{refused_p99 * 1000:.0f} ms; server RSS {baseline / 1024:.0f} MiB before, "
          f"peak {peak[0] / 1024:.0f} MiB; requests after the storm {after_s * 1000:.0f} ms")
    assert storm.errors == []
    assert fault_server.process.poll() is None, "the server died"
    assert len(accepted) > 0
    # Both bounds were reached: the batch queue (UNAVAILABLE, the stock message) and
    # the gRPC threads (RESOURCE_EXHAUSTED; no backlog grows behind them).
    assert storm.codes.get("UNAVAILABLE", 0) > 0 and storm.codes.get("RESOURCE_EXHAUSTED", 0) > 0
    assert "The batch scheduling queue to which this task was submitted is full" in storm.details
    # Refusals are immediate: no waiting in a queue first.
    assert refused_p99 < 1.0
    # Accepted requests wait for at most the bounded queue ahead of them: a gRPC
    # thread pool's worth of requests, however many clients there are.
    assert p99 < 3.0
    assert peak[0] - baseline < 150 * 1024, (baseline, peak)
    assert after_s < 5.0
    assert not [s for s in client.model_status(fault_server.grpc_target, "busy")
                if s["state"] != "AVAILABLE"]


_STARTER = """
import sys, time
from serving.launcher import ServerProcess
server = ServerProcess(sys.argv[1:], rest=False, log_path=sys.argv[0] + ".log").start()
print(server.process.pid, flush=True)
time.sleep(600)
"""


def _running(pid):
    """Whether `pid` is a live process (a zombie that nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_a_server_whose_starter_is_killed_shuts_down(model_library, tmp_path):
    """A test or benchmark killed mid-run (SIGKILL: no cleanup runs) leaves no server behind."""
    import subprocess
    import sys

    install(model_library["text_v1"], str(tmp_path / "toy"), 1)
    starter = tmp_path / "starter.py"
    starter.write_text(_STARTER)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parent = subprocess.Popen(
        [sys.executable, str(starter), "--model_name=toy", f"--model_base_path={tmp_path / 'toy'}",
         "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"],
        stdout=subprocess.PIPE, text=True, cwd=repo,
        env=dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", "")))
    try:
        server_pid = int(parent.stdout.readline())
        assert _running(server_pid)
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: not _running(server_pid), timeout_s=30, what="the orphaned server to exit")
    log = (tmp_path / "starter.py.log").read_text()
    assert "shutting down" in log and "Model server stopped" in log, log[-2000:]
