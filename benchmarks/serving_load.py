"""Load test of the model server: N concurrent gRPC clients x M requests on localhost.

Builds a toy raw-text SavedModel (plain TF, with a few dense layers of compute),
starts `python -m serving.server` as a subprocess, and drives it with concurrent
Predict calls, without and with server-side batching. Optionally drops a new
model version into the base path half-way, to show a hot swap costs no requests.
Reports failures, p50/p99 latency and throughput; exits 1 on any failure.

    python -m benchmarks.serving_load --clients 8 --requests 200 --batching both --reload

Bounded by construction: clients x requests calls, each with a timeout.
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from components.cli import add_bool_flag  # noqa: E402
from serving.launcher import ServerProcess  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog while serving tensors at speed".split()


@dataclasses.dataclass
class LoadResult:
    """What one load run measured.

    Args:
        requests: calls made.
        failures: calls that raised.
        errors: the first few failure messages.
        wall_s: wall time of the run.
        throughput_rps: successful calls per second.
        p50_ms: median latency.
        p99_ms: 99th percentile latency.
        versions: model version -> number of calls it answered.
    """

    requests: int
    failures: int
    errors: list
    wall_s: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    versions: dict


def _texts(client, index, count):
    # Varied lengths so the batched rows differ, deterministic per call.
    rng = np.random.default_rng(client * 100_003 + index)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 30))) for _ in range(count)]


def run_load(target, model, clients=8, requests=200, texts_per_request=1,
             signature="serving_default", timeout_s=30.0, on_halfway=None):
    """Drives a server with `clients` threads, each making `requests` Predict calls.

    Args:
        target: `host:port` of the gRPC API.
        model: model name.
        clients: concurrent clients, each with its own connection. Defaults to 8.
        requests: calls per client. Defaults to 200.
        texts_per_request: rows per call. Defaults to 1.
        signature: signature to call (input `text`). Defaults to "serving_default".
        timeout_s: per-call deadline. Defaults to 30.
        on_halfway: callable run once (in its own thread) when half of all calls
            are done, e.g. to drop in a new version; or None. Defaults to None.

    Returns:
        A `LoadResult`.
    """
    total = clients * requests
    latencies = [[] for _ in range(clients)]
    versions = [dict() for _ in range(clients)]
    errors, failures = [], [0] * clients
    done = [0]
    lock = threading.Lock()
    halfway_threads = []
    start_line = threading.Barrier(clients + 1)

    def client_loop(client):
        options = [("grpc.use_local_subchannel_pool", 1)]  # One connection per client.
        with grpc.insecure_channel(target, options=options) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            prepared = []
            for i in range(requests):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = model
                request.model_spec.signature_name = signature
                request.inputs["text"].CopyFrom(
                    tf.make_tensor_proto(_texts(client, i, texts_per_request), tf.string))
                prepared.append(request)
            start_line.wait()
            for request in prepared:
                begin = time.perf_counter()
                try:
                    response = stub.Predict(request, timeout=timeout_s)
                    latencies[client].append(time.perf_counter() - begin)
                    version = response.model_spec.version.value
                    versions[client][version] = versions[client].get(version, 0) + 1
                except grpc.RpcError as exc:
                    failures[client] += 1
                    with lock:
                        if len(errors) < 5:
                            errors.append(f"{exc.code().name}: {exc.details()}")
                with lock:
                    done[0] += 1
                    if on_halfway is not None and done[0] == total // 2:
                        thread = threading.Thread(target=on_halfway)
                        thread.start()
                        halfway_threads.append(thread)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    start_line.wait()
    begin = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begin
    for thread in halfway_threads:
        thread.join()
    flat = np.array([x for per_client in latencies for x in per_client]) * 1e3
    merged = {}
    for per_client in versions:
        for version, count in per_client.items():
            merged[version] = merged.get(version, 0) + count
    return LoadResult(
        requests=total, failures=sum(failures), errors=errors, wall_s=wall,
        throughput_rps=len(flat) / wall if wall else 0.0,
        p50_ms=float(np.percentile(flat, 50)) if len(flat) else float("nan"),
        p99_ms=float(np.percentile(flat, 99)) if len(flat) else float("nan"),
        versions=dict(sorted(merged.items())))


def _install(source, base_path, version):
    staging = os.path.join(base_path, f".staging-{version}")
    shutil.copytree(source, staging)
    os.rename(staging, os.path.join(base_path, str(version)))  # Atomic drop-in.


def _build_bert(preset, target, seed):
    """A raw-text BERT classifier export (random weights) at `target`."""
    import tempfile

    import keras

    from keras_bert import checkpoints, export
    from keras_bert.config import BertConfig

    vocab = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tokenizer",
                         "vocab_uncased.txt")
    size = sum(1 for _ in open(vocab, encoding="utf-8"))
    keras.utils.set_random_seed(seed)
    model = checkpoints.build_model(BertConfig.preset(preset, vocab_size=size), "classifier",
                                    num_classes=2)
    with tempfile.TemporaryDirectory() as tmp:
        result = export.export_saved_model(model, tmp, "m", vocab, max_seq_length=128)
        shutil.copytree(result.path, target)


def run_mode(args, workdir, batching):
    """Starts a server (batching on or off), runs the load, stops it; returns a dict."""
    from tests.serving import toy_models  # The benchmark's model is the tests' toy model.

    library = os.path.join(workdir, "library")
    if not os.path.exists(library):
        for version in (1, 2):
            if args.bert:
                _build_bert(args.bert, os.path.join(library, str(version)), seed=version)
            else:
                toy_models.build_text_model(os.path.join(library, str(version)), version=version,
                                            dense_layers=args.dense_layers, width=args.width)
    base = os.path.join(workdir, f"base_{'batching' if batching else 'plain'}")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    _install(os.path.join(library, "1"), base, 1)
    flags = ["--model_name", "toy", "--model_base_path", base,
             "--file_system_poll_wait_seconds", "0.2", f"--grpc_max_threads={max(16, args.clients)}"]
    if batching:
        flags += ["--enable_batching", f"--max_batch_size={args.max_batch_size}",
                  f"--batch_timeout_micros={args.batch_timeout_micros}",
                  f"--num_batch_threads={args.num_batch_threads}"]
    with ServerProcess(flags, rest=False, log_path=os.path.join(workdir, "server.log")) as server:
        run_load(server.grpc_target, "toy", clients=2, requests=5)  # Warm the connection paths.
        halfway = (lambda: _install(os.path.join(library, "2"), base, 2)) if args.reload else None
        result = run_load(server.grpc_target, "toy", args.clients, args.requests,
                          args.texts_per_request, on_halfway=halfway)
        exit_code = server.stop()
    report = dataclasses.asdict(result)
    report.update(batching=batching, clients=args.clients, texts_per_request=args.texts_per_request,
                  server_exit_code=exit_code)
    return report


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8, help="Concurrent gRPC clients.")
    p.add_argument("--requests", type=int, default=200, help="Calls per client.")
    p.add_argument("--texts_per_request", type=int, default=1, help="Rows per call.")
    p.add_argument("--batching", choices=["off", "on", "both"], default="both")
    add_bool_flag(p, "reload", False, "Drop in version 2 half-way.")
    p.add_argument("--dense_layers", type=int, default=4, help="Toy model compute (layers).")
    p.add_argument("--width", type=int, default=512, help="Toy model compute (layer width).")
    p.add_argument("--bert", default="", help="Serve a raw-text BERT classifier of this preset "
                   "(e.g. tiny, mini, base) instead of the toy model.")
    p.add_argument("--max_batch_size", type=int, default=32)
    p.add_argument("--batch_timeout_micros", type=int, default=2000)
    p.add_argument("--num_batch_threads", type=int, default=2)
    p.add_argument("--json", default="", help="Also write the reports to this JSON file.")
    args = p.parse_args(argv)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.batching]
    reports = []
    with tempfile.TemporaryDirectory(prefix="serving_load_") as workdir:
        for batching in modes:
            report = run_mode(args, workdir, batching)
            reports.append(report)
            print(f"batching={'on ' if batching else 'off'} clients={report['clients']} "
                  f"requests={report['requests']} failures={report['failures']} "
                  f"p50={report['p50_ms']:.2f}ms p99={report['p99_ms']:.2f}ms "
                  f"throughput={report['throughput_rps']:.0f}/s versions={report['versions']} "
                  f"exit={report['server_exit_code']}", flush=True)
            for error in report["errors"]:
                print(f"  error: {error}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=2)
    return 1 if any(r["failures"] or r["server_exit_code"] != 0 for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
