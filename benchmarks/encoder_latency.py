"""Encoder forward latency: keras-bert vs Hugging Face `transformers` on PyTorch CPU.

BERT-base (random weights, identical in both, with biases and LayerNorm parameters
drawn away from 0 and 1 as a trained checkpoint's are: a graph optimizer drops an add
of zeros or a product with ones, which would flatter a frozen graph), seq 128, batch 1
and 32, float32 and bfloat16 (ours: the encoder built with `dtype="bfloat16"`, weights
held in bfloat16 as an inference deployment would (`mixed_bfloat16`, the training
policy, re-casts every float32 weight per call and is also reported); peer:
`torch.autocast("cpu", torch.bfloat16)`). Ours is timed with variables and frozen
(weights as graph constants, what a default export serves). Two harnesses: both
frameworks in one process, alternating, with the same thread count; and each
framework in its own processes (their thread pools then never compete; medians over
`--rounds` processes per side). Prints a table and ratios (peer time / our time: > 1
means we are faster).

    python -m benchmarks.encoder_latency [--model base] [--repeats 5]
        [--harness both|one_process|own_processes] [--rounds 2] [--json OUT]
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

from benchmarks import workers


def _time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ours_forwards(config, dtypes, state=None):
    """{(dtype, "variables"|"frozen"): forward(x)} for our encoder.

    "frozen" is the function a default export serves (`export.freeze_model`).
    """
    import tensorflow as tf

    from keras_bert import checkpoints, export

    forwards = {}
    for dtype in dtypes:
        encoder = checkpoints.build_model(config, "encoder", dtype=dtype)
        if state is not None:
            checkpoints.assign_weights(encoder, {checkpoints.normalize_hf_name(k): v
                                                 for k, v in state.items()})

        @tf.function(jit_compile=False, reduce_retracing=True)
        def forward(x, encoder=encoder):
            return encoder(x, training=False)["sequence_output"]

        forwards[(dtype, "variables")] = lambda x, f=forward: f(x).numpy()
        frozen = export.freeze_model(encoder)
        forwards[(dtype, "frozen")] = (
            lambda x, f=frozen: f(x)["encoder"]["sequence_output"].numpy())
    return forwards


def _inputs(config, batch, seq_len):
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, config.vocab_size, (batch, seq_len)).astype("int32")
    return ids


def _peer_model(config):
    """The peer's BertModel with the benchmark's weights (see the module docstring)."""
    import torch
    import transformers

    torch.manual_seed(0)
    hf_model = transformers.BertModel(transformers.BertConfig(**{
        k: v for k, v in config.to_dict().items() if k != "do_lower_case"})).eval()
    with torch.no_grad():
        for name, param in hf_model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                param.add_(torch.randn_like(param) * 0.05)
    return hf_model


def _peer_state(hf_model):
    """The peer's weights as numpy arrays, named as our checkpoint import expects."""
    return {"bert." + k: v.detach().numpy() for k, v in hf_model.state_dict().items()
            if not k.endswith("position_ids")}


def _peer_forward(hf_model, dtype):
    import torch

    def forward(ids):
        tids = torch.tensor(ids, dtype=torch.long)
        with torch.inference_mode(), torch.autocast(
                "cpu", dtype=torch.bfloat16, enabled=dtype != "float32"):
            hf_model(input_ids=tids, attention_mask=torch.ones_like(tids))
    return forward


def _row(config_name, dtype, weights, batch, seq_len, t_ours, t_peer, peer, harness):
    row = {"case": "encoder_forward", "config": config_name, "dtype": dtype, "weights": weights,
           "harness": harness, "batch": batch, "seq_len": seq_len, "ours_ms": 1e3 * t_ours,
           "peer_ms": 1e3 * t_peer, "peer": peer, "speedup": t_peer / t_ours}
    print(f"{config_name:>5} {dtype:>14} {weights:>9} batch {batch:>3} seq {seq_len} "
          f"[{harness}]: ours {row['ours_ms']:8.1f} ms | HF/PyTorch {row['peer_ms']:8.1f} ms | "
          f"ratio (peer/ours) {row['speedup']:.2f}x", flush=True)
    return row


def run(config_name="base", seq_len=128, batches=(1, 32), repeats=5,
        dtypes=("float32", "bfloat16", "mixed_bfloat16"), separate=True, rounds=2):
    """Both harnesses by default: each framework in its own process (`separate`), then
    one process alternating the two frameworks.

    The own-process workers run first, while this process holds no model: the
    one-process harness keeps six BERT-base encoders and the peer's models (about
    12 GB), and a worker beside it needs as much again, more than a 24 GB machine
    has (the worker was killed for memory).
    """
    results = []
    if separate:
        results += _separate_processes(config_name, seq_len, batches, repeats, dtypes, rounds)
    return _same_process(config_name, seq_len, batches, repeats, dtypes) + results


def _same_process(config_name, seq_len, batches, repeats, dtypes):
    import tensorflow as tf
    import torch
    import transformers

    from keras_bert.config import BertConfig

    torch.set_num_threads(os.cpu_count())
    config = BertConfig.preset(config_name)
    hf_model = _peer_model(config)
    state = _peer_state(hf_model)
    peer = f"transformers {transformers.__version__} / torch {torch.__version__}"
    forwards = _ours_forwards(config, dtypes, state=state)
    results = []
    for (dtype, weights), ours in forwards.items():
        for batch in batches:
            ids = _inputs(config, batch, seq_len)
            x = {"input_ids": tf.constant(ids), "segment_ids": tf.zeros_like(ids),
                 "input_mask": tf.ones_like(ids)}
            n = repeats if batch <= 8 else max(2, repeats // 2)
            t_ours = _time(lambda: ours(x), n)
            t_peer = _time(lambda: _peer_forward(hf_model, dtype)(ids), n)
            results.append(_row(config_name, dtype, weights, batch, seq_len, t_ours, t_peer,
                                peer, "one process"))
    return results


def _worker(side, config_name, seq_len, batches, repeats, dtypes, weights_path):
    """One framework's median times, in this process: {"dtype/weights/batch": seconds}.

    The peer runs first and saves its weights to `weights_path` (npz); ours loads them.
    """
    from keras_bert.config import BertConfig

    config = BertConfig.preset(config_name)
    times = {}
    if side == "peer":
        import torch
        import transformers

        torch.set_num_threads(os.cpu_count())
        hf_model = _peer_model(config)
        np.savez(weights_path, **_peer_state(hf_model))
        times["peer"] = f"transformers {transformers.__version__} / torch {torch.__version__}"
        for dtype in dtypes:
            forward = _peer_forward(hf_model, dtype)
            for batch in batches:
                n = repeats if batch <= 8 else max(2, repeats // 2)
                ids = _inputs(config, batch, seq_len)
                times[f"{dtype}/-/{batch}"] = _time(lambda: forward(ids), n)
        return times
    import tensorflow as tf

    with np.load(weights_path) as saved:
        state = dict(saved)
    for (dtype, weights), forward in _ours_forwards(config, dtypes, state=state).items():
        for batch in batches:
            n = repeats if batch <= 8 else max(2, repeats // 2)
            ids = _inputs(config, batch, seq_len)
            x = {"input_ids": tf.constant(ids), "segment_ids": tf.zeros_like(ids),
                 "input_mask": tf.ones_like(ids)}
            times[f"{dtype}/{weights}/{batch}"] = _time(lambda: forward(x), n)
    return times


def _separate_processes(config_name, seq_len, batches, repeats, dtypes, rounds=2):
    """Each framework in its own processes, `rounds` of them each, alternating.

    On a shared 2-core machine one process of either framework can run the same
    oneDNN matmul at half another's speed (measured: 19-47 ms for one bfloat16
    4096x768x3072 product in six TensorFlow processes, 19-57 ms in four PyTorch
    ones), so each side's figure is its median over `rounds` processes, and the
    rows keep every process's time.
    """
    with tempfile.TemporaryDirectory() as scratch:
        weights_path = os.path.join(scratch, "weights.npz")

        def spawn(side):
            return workers.run_worker(
                "benchmarks.encoder_latency",
                ["--worker", side, "--model", config_name, "--seq_len", str(seq_len),
                 "--repeats", str(repeats), "--batches", *map(str, batches),
                 "--dtypes", *dtypes, "--weights", weights_path],
                f"encoder_latency {side}")

        peers, ours = [], []
        for _ in range(rounds):
            peers.append(spawn("peer"))  # first: it writes the weights both sides use
            ours.append(spawn("ours"))
    results = []
    for key in ours[0]:
        dtype, weights, batch = key.split("/")
        ours_runs = [run[key] for run in ours]
        peer_runs = [run[f"{dtype}/-/{batch}"] for run in peers]
        row = _row(config_name, dtype, weights, int(batch), seq_len,
                   statistics.median(ours_runs), statistics.median(peer_runs),
                   peers[0]["peer"], "own processes")
        row.update(processes=rounds, ours_ms_each=[round(1e3 * t, 1) for t in ours_runs],
                   peer_ms_each=[round(1e3 * t, 1) for t in peer_runs])
        results.append(row)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base", help="BertConfig preset.")
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "mixed_bfloat16"])
    parser.add_argument("--harness", choices=["both", "one_process", "own_processes"],
                        default="both")
    parser.add_argument("--rounds", type=int, default=2,
                        help="Processes per framework in the own-process harness (medians).")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", choices=["ours", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        times = _worker(args.worker, args.model, args.seq_len, args.batches, args.repeats,
                        args.dtypes, args.weights)
        workers.report(times)
        return
    if args.harness == "own_processes":
        results = _separate_processes(args.model, args.seq_len, args.batches, args.repeats,
                                      args.dtypes, args.rounds)
    else:
        results = run(args.model, args.seq_len, args.batches, args.repeats, args.dtypes,
                      separate=args.harness == "both", rounds=args.rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
