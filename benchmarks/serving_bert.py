"""Serving a BERT-base classifier (seq 128): our model server vs in-process, and vs PyTorch.

Three comparisons, one run, same texts:
1. Our gRPC model server (raw text in, probabilities out), single-request latency and
   throughput with 8 concurrent clients (batching on), against the Keras model called
   directly in-process (Python tokenizer + `model(...)` under tf.function).
2. The exported SavedModel called in-process (in-graph tokenizer), single request,
   against Hugging Face `BertForSequenceClassification` + `BertTokenizerFast` on
   PyTorch CPU.
3. The server against that SavedModel in-process (its own overhead), single request,
   timed in alternating blocks so that both see the same machine load.
Ratios are peer time / our time (above 1: we are faster); case 3 reports server / in-process.

    python -m benchmarks.serving_bert [--requests 40] [--model base] [--intra_op 1 --inter_op 1]

`--intra_op`/`--inter_op` size TensorFlow's thread pools in the server and in this
process alike, so case 3 compares the server with an in-process call under the same
thread settings (0: TensorFlow's defaults, as the server's own defaults).
"""

import argparse
import concurrent.futures
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

TEXT = ("The event loop runs asynchronous tasks and callbacks, performs network IO "
        "operations, and runs subprocesses for the application.")


def _latency(fn, n, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), float(np.percentile(times, 99))


def _interleaved_latency(fns, n, blocks=8, warmup=3):
    """p50 and p99 of each callable, timed in alternating blocks of n / blocks calls.

    A ratio of two latencies taken minutes apart on a shared machine measures the
    load that changed in between; alternating blocks give both the same load.

    Returns:
        dict name -> (p50, p99) in seconds.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    per_block = max(1, n // blocks)
    for block in range(blocks):
        names = list(fns) if block % 2 == 0 else list(fns)[::-1]
        for name in names:
            for _ in range(per_block):
                start = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), float(np.percentile(t, 99))) for name, t in times.items()}


_HF_SCRIPT = """
import json, os, sys, statistics, time, torch, transformers
config, vocab, n, text = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(os.cpu_count())
hf = transformers.BertForSequenceClassification(transformers.BertConfig(**config, num_labels=2)).eval()
tok = transformers.BertTokenizerFast(vocab_file=vocab, do_lower_case=True)
def call():
    with torch.inference_mode():
        enc = tok([text], return_tensors="pt", truncation=True, max_length=128)
        torch.softmax(hf(**enc).logits, -1).numpy()
for _ in range(3): call()
ts = []
for _ in range(n):
    t = time.perf_counter(); call(); ts.append(time.perf_counter() - t)
print(json.dumps({"p50": statistics.median(ts), "version": transformers.__version__ + " / torch " + torch.__version__}))
"""


def _hf_latency_subprocess(config, vocab, requests):
    import json
    import subprocess
    import sys
    values = {k: v for k, v in config.to_dict().items() if k != "do_lower_case"}
    proc = subprocess.run([sys.executable, "-c", _HF_SCRIPT, json.dumps(values), vocab,
                           str(requests), TEXT], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["p50"]


def run(config_name="base", requests=40, clients=8, vocab=None, intra_op=0, inter_op=0):
    import grpc
    import tensorflow as tf

    # Before any TensorFlow op runs in this process; the server gets the same flags.
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    thread_flags = [f"--tensorflow_intra_op_parallelism={intra_op}",
                    f"--tensorflow_inter_op_parallelism={inter_op}"]
    from keras_bert import checkpoints, export
    from keras_bert.config import BertConfig
    from keras_bert.tokenizer import BertTokenizer
    from serving import client
    from serving.launcher import ServerProcess

    vocab = vocab or os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                  "tokenizer", "vocab_uncased.txt")
    config = BertConfig.preset(config_name)
    tf.keras.utils.set_random_seed(0)
    model = checkpoints.build_model(config, "classifier", num_classes=2)
    tmp = tempfile.mkdtemp(prefix="bench_serving_")
    try:
        exported = export.export_saved_model(model, tmp, "bert", vocab, max_seq_length=128,
                                             labels=["a", "b"])
        results = []

        # In-process Keras (the direct path a notebook would use).
        tok = BertTokenizer.from_vocab(vocab)
        forward = tf.function(lambda x: model(x, training=False)["logits"], reduce_retracing=True)

        def keras_call():
            enc = tok.encode_batch([TEXT])
            forward({k: tf.constant(v, tf.int32) for k, v in enc.items()}).numpy()

        k50, k99 = _latency(keras_call, requests)
        # The same export called in-process (in-graph tokenizer): the server's peer.
        loaded = tf.saved_model.load(exported.path)
        serve = loaded.signatures["serving_default"]

        def savedmodel_call():
            serve(text=tf.constant([TEXT]))["probabilities"].numpy()

        server = ServerProcess(["--model_name=bert", f"--model_base_path={tmp}/bert",
                                "--enable_batching=true", "--max_batch_size=16",
                                "--batch_timeout_micros=0"] + thread_flags, rest=False)
        server.start(timeout_s=600)
        # One channel for all calls, as a real client keeps it: a new channel per call
        # would add its connection set-up (about 1 ms) to every request.
        channel = grpc.insecure_channel(server.grpc_target)
        try:
            single = _interleaved_latency(
                {"server": lambda: client.predict_text(channel, "bert", [TEXT]),
                 "savedmodel": savedmodel_call}, requests)
            (s50, s99), (m50, m99) = single["server"], single["savedmodel"]
            total = requests * 2
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                list(pool.map(lambda _: client.predict_text(channel, "bert", [TEXT]), range(total)))
            server_tput = total / (time.perf_counter() - start)
        finally:
            channel.close()
            server.stop()
        start = time.perf_counter()
        for _ in range(total // 4):
            keras_call()
        keras_tput = (total // 4) / (time.perf_counter() - start)
        results.append({"case": "serving_vs_inprocess_keras", "config": config_name,
                        "server_p50_ms": 1e3 * s50, "server_p99_ms": 1e3 * s99,
                        "keras_p50_ms": 1e3 * k50, "keras_p99_ms": 1e3 * k99,
                        "server_rps_8_clients_batching": server_tput, "keras_rps_sequential": keras_tput,
                        "latency_ratio_keras_over_server": k50 / s50,
                        "throughput_ratio_server_over_keras": server_tput / keras_tput})
        print(f"server p50 {1e3*s50:.1f} ms p99 {1e3*s99:.1f} ms, {server_tput:.1f} req/s with "
              f"{clients} clients | in-process Keras p50 {1e3*k50:.1f} ms, {keras_tput:.1f} req/s | "
              f"latency ratio (keras/server) {k50/s50:.2f}, throughput ratio {server_tput/keras_tput:.2f}",
              flush=True)

        # SavedModel in-process (timed above, alternating with the server) vs Hugging
        # Face on PyTorch, single request.
        # The peer runs in its own process: TensorFlow's idle thread pools in this one
        # would otherwise compete with PyTorch's for the same cores.
        h50 = _hf_latency_subprocess(config, vocab, requests)
        results.append({"case": "savedmodel_vs_hf_single_request", "config": config_name,
                        "savedmodel_p50_ms": 1e3 * m50, "hf_p50_ms": 1e3 * h50, "ratio": h50 / m50,
                        "peer": "transformers BertForSequenceClassification + BertTokenizerFast, "
                                "PyTorch CPU, separate process"})
        results.append({"case": "server_vs_savedmodel_single_request", "config": config_name,
                        "server_p50_ms": 1e3 * s50, "savedmodel_p50_ms": 1e3 * m50,
                        "savedmodel_p99_ms": 1e3 * m99, "server_over_savedmodel": s50 / m50,
                        "method": "one kept channel, timed in alternating blocks with the SavedModel",
                        "tf_threads_intra_inter": [intra_op, inter_op]})
        print(f"SavedModel p50 {1e3*m50:.1f} ms | server p50 / SavedModel p50 {s50/m50:.2f}x | "
              f"HF/PyTorch p50 {1e3*h50:.1f} ms | "
              f"ratio (peer/ours) {h50/m50:.2f}x", flush=True)
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a BERT-base SavedModel: 400+ MB


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base", help="BertConfig preset.")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--intra_op", type=int, default=0,
                        help="TensorFlow intra-op threads, server and in-process (0: TF default).")
    parser.add_argument("--inter_op", type=int, default=0,
                        help="TensorFlow inter-op threads, server and in-process (0: TF default).")
    args = parser.parse_args(argv)
    run(args.model, args.requests, intra_op=args.intra_op, inter_op=args.inter_op)


if __name__ == "__main__":
    main()
