"""Pre-training throughput: keras-bert `model.fit` vs Hugging Face BertForPreTraining on PyTorch CPU.

Same config, batch, sequence length and masked positions for both; synthetic
batches; a full training step each (forward, MLM + NSP loss, backward, AdamW with
weight decay and global-norm clipping 1.0). Ours: `BertPretrainingModel` +
`optimization.AdamWeightDecay`, run by `model.fit` on a repeated tf.data batch, in
float32 and Keras `mixed_bfloat16`, and with XLA (`jit_compile`) on request (`--jit`). Peer:
`transformers.BertForPreTraining` + `torch.optim.AdamW`, float32 and
`torch.autocast("cpu", torch.bfloat16)`. Every variant runs in its own fresh process
(PyTorch's and TensorFlow's thread pools would otherwise compete for the same cores)
with the machine's core count as its thread count; the variants alternate,
`--repeats` processes each. In a process the first steps (tracing, compilation,
allocator warm-up) are not timed, then `--chunks` chunks of `--steps` steps are; a
chunk counts only if other processes used at most 5% of the CPU meanwhile (or all
count, when none was quiet), and each variant reports the median and range of its
counted chunks.

One structural difference: ours computes MLM logits only at the
`max_predictions_per_seq` masked positions (as the original `run_pretraining.py`);
`BertForPreTraining` at every position (labels -100 elsewhere), which at vocabulary
30522 roughly doubles the work of a small model. So the peer is measured twice: as
shipped ("hf"), and with the same modules applied the original's way ("hf_gathered":
`model.bert`, then `model.cls` on the gathered masked positions), the like-for-like
comparison.

Prints sequences/s and ratios (ours / peer: > 1 means we train faster).

    python -m benchmarks.pretrain_throughput [--model L4_H256] [--batch 16] [--seq 128]
        [--steps 10] [--chunks 3] [--repeats 2] [--precisions float32 bfloat16] [--json OUT]
"""

import argparse
import json
import os
import statistics

import numpy as np

from benchmarks import workers


def _batch(config, batch, seq, preds, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, config.vocab_size, (batch, seq)).astype("int32")
    positions = np.sort(np.stack([rng.choice(np.arange(1, seq - 1), preds, replace=False)
                                  for _ in range(batch)]), axis=1).astype("int32")
    labels = np.take_along_axis(ids, positions, 1)
    masked = ids.copy()
    np.put_along_axis(masked, positions, 103, 1)
    segments = (np.arange(seq)[None, :] >= seq // 2).astype("int32").repeat(batch, 0)
    nsp = rng.integers(0, 2, (batch, 1)).astype("int32")
    return masked, segments, positions, labels, nsp


def _ours(config, data, warmup, precision, jit):
    """Builds and warms up our training step; returns `train(steps)`."""
    import keras
    import tensorflow as tf

    from keras_bert import checkpoints, optimization

    masked, segments, positions, labels, nsp = data
    keras.utils.set_random_seed(0)
    policy = "mixed_bfloat16" if precision == "bfloat16" else None
    model = checkpoints.build_model(config, "pretraining", dtype=policy)
    model.compile(optimizer=optimization.create_optimizer("adamw", 1e-4, 10000, 100),
                  jit_compile=jit)
    x = {"input_ids": masked, "segment_ids": segments, "input_mask": np.ones_like(masked),
         "masked_lm_positions": positions}
    y = {"masked_lm_ids": labels, "masked_lm_weights": np.ones(labels.shape, "float32"),
         "next_sentence_labels": nsp}
    ds = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)
    options = tf.data.Options()
    # `model.fit` makes a new iterator per call; tearing down an autotuned one can
    # stall the next call by seconds (as `data.task_dataset` notes).
    options.autotune.enabled = False
    ds = ds.with_options(options)

    def train(steps):
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)

    train(warmup)
    return train


def torch_adamw(model, learning_rate, weight_decay=0.01):
    """`torch.optim.AdamW` as Hugging Face fine-tunes BERT: no decay for biases and
    LayerNorm weights, epsilon 1e-6 (the peer of our `create_optimizer("adamw")`)."""
    import torch

    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not any(k in n for k in no_decay)],
               "weight_decay": weight_decay},
              {"params": [p for n, p in named if any(k in n for k in no_decay)],
               "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, eps=1e-6)


def _peer(config, data, warmup, precision, gathered):
    """Builds and warms up the peer's training step; returns `train(steps)`."""
    import torch
    import transformers

    masked, segments, positions, labels, nsp = data
    torch.manual_seed(0)
    hf_config = transformers.BertConfig(**{k: v for k, v in config.to_dict().items()
                                           if k != "do_lower_case"})
    model = transformers.BertForPreTraining(hf_config).train()
    optimizer = torch_adamw(model, 1e-4)
    ids = torch.tensor(masked, dtype=torch.long)
    token_type = torch.tensor(segments, dtype=torch.long)
    mask = torch.ones_like(ids)
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels.scatter_(1, torch.tensor(positions, dtype=torch.long),
                        torch.tensor(labels, dtype=torch.long))
    nsp_labels = torch.tensor(nsp[:, 0], dtype=torch.long)
    index = torch.tensor(positions, dtype=torch.long)
    gathered_labels = torch.tensor(labels, dtype=torch.long).reshape(-1)
    cross_entropy = torch.nn.functional.cross_entropy

    def loss_fn():
        if not gathered:
            return model(input_ids=ids, token_type_ids=token_type, attention_mask=mask,
                         labels=mlm_labels, next_sentence_label=nsp_labels).loss
        out = model.bert(input_ids=ids, token_type_ids=token_type, attention_mask=mask)
        hidden = out.last_hidden_state  # (batch, seq, hidden)
        picked = torch.gather(hidden, 1, index[:, :, None].expand(-1, -1, hidden.shape[-1]))
        mlm_logits = model.cls.predictions(picked).float()  # (batch, preds, vocab)
        nsp_logits = model.cls.seq_relationship(out.pooler_output).float()
        return (cross_entropy(mlm_logits.reshape(-1, mlm_logits.shape[-1]), gathered_labels)
                + cross_entropy(nsp_logits, nsp_labels))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    def train(steps):
        for _ in range(steps):
            step()

    train(warmup)
    return train


VARIANTS = ("ours", "ours_jit", "hf", "hf_gathered")


def _worker(args):
    """One variant in this process: warm-up, then `chunks` timed chunks of `steps` steps."""
    from keras_bert.config import BertConfig

    config = BertConfig.preset(args.model)
    data = _batch(config, args.batch, args.seq, args.max_predictions)
    if args.worker.startswith("ours"):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count())
        train = _ours(config, data, args.warmup, args.precision, jit=args.worker == "ours_jit")
    else:
        import torch

        torch.set_num_threads(os.cpu_count())
        train = _peer(config, data, args.warmup, args.precision,
                      gathered=args.worker == "hf_gathered")
    workers.report([workers.timed(lambda: train(args.steps), args.steps * args.batch)
                    for _ in range(args.chunks)])


def run(config_name="L4_H256", batch=16, seq_len=128, max_predictions=20, steps=10, warmup=3,
        chunks=3, repeats=2, precisions=("float32", "bfloat16"), jit=False):
    """Alternates fresh processes of every variant; one row per precision (and jit setting).

    `jit` adds our step compiled with XLA (`jit_compile=True`); off by default, as it
    measured about 4x slower than without on a 2-core CPU (7.8 against 34 sequences/s).
    """
    variants = VARIANTS if jit else tuple(v for v in VARIANTS if v != "ours_jit")
    import torch
    import transformers

    results = []
    for precision in precisions:
        chunks_of = {name: [] for name in variants}
        for _ in range(repeats):
            for name in variants:
                argv = ["--worker", name, "--precision", precision, "--model", config_name,
                        "--batch", str(batch), "--seq", str(seq_len), "--max_predictions",
                        str(max_predictions), "--steps", str(steps), "--warmup", str(warmup),
                        "--chunks", str(chunks)]
                chunks_of[name] += workers.run_worker("benchmarks.pretrain_throughput", argv,
                                                      f"{name} {precision}")
        rates = {name: [r["rate"] for r in workers.quiet(rows)] for name, rows in chunks_of.items()}
        median = {name: statistics.median(r) for name, r in rates.items()}
        other = max(r["other_cpu"] for rows in chunks_of.values() for r in workers.quiet(rows))
        for name in ("ours", "ours_jit")[:1 + bool(jit)]:
            rate = median[name]
            row = {"case": "pretrain_step", "config": config_name, "precision": precision,
                   "jit_compile": name == "ours_jit", "batch": batch, "seq_len": seq_len,
                   "max_predictions_per_seq": max_predictions, "steps_per_chunk": steps,
                   "processes_per_variant": repeats,
                   "ours_sequences_per_s": rate, "peer_sequences_per_s": median["hf"],
                   "peer_gathered_sequences_per_s": median["hf_gathered"],
                   "ours_range": [min(rates[name]), max(rates[name])],
                   "peer_range": [min(rates["hf"]), max(rates["hf"])],
                   "peer_gathered_range": [min(rates["hf_gathered"]), max(rates["hf_gathered"])],
                   "chunks_counted": {n: len(rates[n]) for n in (name, "hf", "hf_gathered")},
                   "chunks_run": {n: len(chunks_of[n]) for n in (name, "hf", "hf_gathered")},
                   "other_cpu_max": other,
                   "peer": f"transformers {transformers.__version__} BertForPreTraining / "
                           f"torch {torch.__version__}",
                   # The like-for-like ratio (the peer's MLM on the masked positions too).
                   "speedup": rate / median["hf_gathered"],
                   "speedup_vs_hf_as_shipped": rate / median["hf"]}
            results.append(row)
            print(f"{config_name} {precision:>8} jit={str(name == 'ours_jit'):5} batch {batch} seq {seq_len}: "
                  f"ours {rate:6.1f} seq/s ({row['ours_range'][0]:.1f}-{row['ours_range'][1]:.1f})"
                  f" | HF gathered {median['hf_gathered']:6.1f} "
                  f"({row['peer_gathered_range'][0]:.1f}-{row['peer_gathered_range'][1]:.1f}; "
                  f"ratio {row['speedup']:.2f}x) | HF as shipped {median['hf']:6.1f} "
                  f"(ratio {row['speedup_vs_hf_as_shipped']:.2f}x) | other processes' CPU <= "
                  f"{100 * other:.0f}%", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="L4_H256", help="BertConfig preset.")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--max_predictions", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=3, help="Timed chunks per process.")
    parser.add_argument("--repeats", type=int, default=2, help="Processes per variant.")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16"])
    parser.add_argument("--jit", action="store_true", help="Also time our XLA-compiled step.")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    results = run(args.model, args.batch, args.seq, args.max_predictions, args.steps,
                  args.warmup, args.chunks, args.repeats, tuple(args.precisions), args.jit)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
