"""Encoder forward latency: keras-bert vs Hugging Face `transformers` on PyTorch CPU.

BERT-base (random weights, identical in both), seq 128, batch 1 and 32, float32 and
bfloat16 (ours: the encoder built with `dtype="bfloat16"`, weights held in bfloat16 as
an inference deployment would (`mixed_bfloat16`, the training policy, re-casts every
float32 weight per call and is also reported); peer: `torch.autocast("cpu",
torch.bfloat16)`). Both run in this one
process, alternating, with the same thread count. Prints a table and ratios
(peer time / our time: > 1 means we are faster).

    python -m benchmarks.encoder_latency [--model base] [--repeats 5] [--json OUT]
"""

import argparse
import json
import os
import statistics
import time

import numpy as np


def _time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(config_name="base", seq_len=128, batches=(1, 32), repeats=5,
        dtypes=("float32", "bfloat16", "mixed_bfloat16")):
    import tensorflow as tf
    import torch
    import transformers

    from keras_bert import checkpoints
    from keras_bert.config import BertConfig

    threads = os.cpu_count()
    torch.set_num_threads(threads)
    config = BertConfig.preset(config_name)
    hf_model = transformers.BertModel(transformers.BertConfig(**{
        k: v for k, v in config.to_dict().items() if k != "do_lower_case"})).eval()
    state = {"bert." + k: v.detach().numpy() for k, v in hf_model.state_dict().items()
             if not k.endswith("position_ids")}

    results = []
    for dtype in dtypes:
        policy = dtype
        encoder = checkpoints.build_model(config, "encoder", dtype=policy)
        checkpoints.assign_weights(encoder, {checkpoints.normalize_hf_name(k): v
                                             for k, v in state.items()})

        @tf.function(jit_compile=False, reduce_retracing=True)
        def forward(x):
            return encoder(x, training=False)["sequence_output"]

        for batch in batches:
            rng = np.random.default_rng(0)
            ids = rng.integers(1000, config.vocab_size, (batch, seq_len)).astype("int32")
            x = {"input_ids": tf.constant(ids), "segment_ids": tf.zeros_like(ids),
                 "input_mask": tf.ones_like(ids)}
            tids = torch.tensor(ids, dtype=torch.long)
            tmask = torch.ones_like(tids)

            def ours():
                forward(x).numpy()

            def peer():
                with torch.inference_mode(), torch.autocast(
                        "cpu", dtype=torch.bfloat16, enabled=dtype != "float32"):
                    hf_model(input_ids=tids, attention_mask=tmask)

            n = repeats if batch <= 8 else max(2, repeats // 2)
            t_ours = _time(ours, n)
            t_peer = _time(peer, n)
            row = {"case": "encoder_forward", "config": config_name, "dtype": dtype,
                   "batch": batch, "seq_len": seq_len, "ours_ms": 1e3 * t_ours,
                   "peer_ms": 1e3 * t_peer, "peer": f"transformers {transformers.__version__} "
                   f"/ torch {torch.__version__}", "speedup": t_peer / t_ours}
            results.append(row)
            print(f"{config_name:>5} {dtype:>14} batch {batch:>3} seq {seq_len}: ours "
                  f"{row['ours_ms']:8.1f} ms | HF/PyTorch {row['peer_ms']:8.1f} ms | "
                  f"ratio (peer/ours) {row['speedup']:.2f}x", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base", help="BertConfig preset.")
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = run(args.model, args.seq_len, repeats=args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
