"""Fine-tuning throughput: keras-bert vs Hugging Face `transformers`, each in its own process.

The case a user runs most: a sentence classifier fine-tuned from a MiniLM-size encoder
(6 layers, hidden 384, 12 heads, vocabulary 30,522), batch 32, sequence 64, AdamW with
weight decay, linear warm-up and decay, gradient clipping at global norm 1.0.

- **Ours:** TFRecords as TaskData writes them, read by `data.task_dataset` (shuffle,
  batch, parse), `checkpoints.build_model(..., "classifier")`,
  `optimization.create_optimizer("adamw")`, `model.fit`, exactly as
  `components.finetune` trains.
- **Peer:** `transformers.BertForSequenceClassification` in a plain PyTorch loop
  (`torch.optim.AdamW`, `get_linear_schedule_with_warmup`, `clip_grad_norm_`), eager,
  the same batches; bfloat16 through `torch.autocast("cpu", torch.bfloat16)`.

Both sides get the same synthetic examples (random word pieces, lengths 16..64 by
default or `--min_length`..64, the rest padding; each batch cut to its longest sequence,
rounded up to 8, as `data.task_dataset` does) and 2 intra-op threads (the machine's
cores). Each side runs in a fresh process so the two frameworks' thread pools never
compete; the sides alternate, `--repeats` times, and every rate is one epoch's train
examples per second after a warm-up epoch (tracing, allocator warm-up) that is not
timed. Epochs during which other processes used more than 5% of the machine's CPU are
left out when there are quiet ones (the report says how many counted). Ratios are ours /
peer (> 1: we train faster); the report gives each side's median and range.

    python -m benchmarks.finetune_throughput [--precisions float32 bfloat16]
        [--examples 256] [--epochs 4] [--repeats 2] [--json OUT]
"""

import argparse
import json
import os
import statistics
import tempfile

import numpy as np

from benchmarks import workers
from benchmarks.pretrain_throughput import torch_adamw

# MiniLM-L6-H384 (e.g. all-MiniLM-L6-v2, the size the issue measured).
MODEL = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
             intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)
NUM_CLASSES = 6
LEARNING_RATE = 5e-5
WARMUP_PROPORTION = 0.1


def synthetic_examples(n, seq, seed=0, min_length=16):
    """(input_ids, input_mask, segment_ids, labels): [CLS] pieces [SEP] then padding.

    Lengths are uniform in [min_length, seq]; `min_length=seq` gives no padding.
    """
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, seq), "int64")
    mask = np.zeros((n, seq), "int64")
    lengths = rng.integers(min(min_length, seq), seq + 1, n)
    for i, length in enumerate(lengths):
        ids[i, :length] = rng.integers(1000, MODEL["vocab_size"], length)
        ids[i, 0], ids[i, length - 1] = 101, 102
        mask[i, :length] = 1
    labels = rng.integers(0, NUM_CLASSES, n)
    return ids, mask, np.zeros_like(ids), labels


def _timed_epochs(train_epoch, epochs, examples):
    """Runs one untimed warm-up epoch, then `epochs` timed ones; returns per-epoch rows."""
    train_epoch()
    rows = []
    for _ in range(epochs):
        row = workers.timed(train_epoch, examples)
        rows.append({"examples_per_s": row["rate"], "seconds": row["seconds"],
                     "other_cpu": row["other_cpu"]})
    return rows


def ours(precision, examples, batch, seq, epochs, jit_compile=False, steps_per_execution=1,
         min_length=16):
    import keras
    import tensorflow as tf

    from keras_bert import checkpoints, data, features, optimization
    from keras_bert import precision as precision_lib
    from keras_bert.config import BertConfig

    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count())
    keras.utils.set_random_seed(0)
    ids, mask, segments, labels = synthetic_examples(examples, seq, min_length=min_length)
    config = BertConfig(**MODEL)
    policy = precision_lib.dtype_policy("bfloat16" if precision == "bfloat16" else "none")
    model = checkpoints.build_model(config, "classifier", dtype=policy, num_classes=NUM_CLASSES)
    steps = -(-examples // batch)
    total = steps * (epochs + 1)
    optimizer = optimization.create_optimizer(
        "adamw", LEARNING_RATE, num_train_steps=total,
        num_warmup_steps=int(total * WARMUP_PROPORTION), decay_after_warmup=True)
    model.compile(optimizer=optimizer, jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution,
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    with tempfile.TemporaryDirectory(prefix="finetune_bench_") as folder:
        path = os.path.join(folder, "train.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(examples):
                writer.write(features.serialize_example({
                    features.INPUT_IDS: ids[i].tolist(), features.INPUT_MASK: mask[i].tolist(),
                    features.SEGMENT_IDS: segments[i].tolist(),
                    features.LABEL_IDS: [int(labels[i])]}))
        ds = data.task_dataset(path, "classification", seq, batch, is_training=True, seed=0,
                               num_records=examples)

        def train_epoch():
            model.fit(ds, epochs=1, verbose=0, shuffle=False)

        return _timed_epochs(train_epoch, epochs, examples)


def peer(precision, examples, batch, seq, epochs, min_length=16):
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    ids, mask, segments, labels = synthetic_examples(examples, seq, min_length=min_length)
    config = transformers.BertConfig(**MODEL, num_labels=NUM_CLASSES)
    model = transformers.BertForSequenceClassification(config).train()
    optimizer = torch_adamw(model, LEARNING_RATE)
    steps = -(-examples // batch)
    total = steps * (epochs + 1)
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, int(total * WARMUP_PROPORTION), total)
    tensors = [torch.tensor(a) for a in (ids, mask, segments, labels)]
    generator = torch.Generator().manual_seed(0)

    def train_epoch():
        order = torch.randperm(examples, generator=generator)
        for start in range(0, examples, batch):
            index = order[start:start + batch]
            b_ids, b_mask, b_seg, b_labels = (t[index] for t in tensors)
            # The padding no sequence of the batch uses is dropped, as ours does
            # (`data.trim_padding`: the longest length rounded up to 8).
            keep = min(seq, -(-int(b_mask.sum(1).max()) // 8) * 8)
            b_ids, b_mask, b_seg = b_ids[:, :keep], b_mask[:, :keep], b_seg[:, :keep]
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                loss = model(input_ids=b_ids, attention_mask=b_mask, token_type_ids=b_seg,
                             labels=b_labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()

    return _timed_epochs(train_epoch, epochs, examples)


def _worker(args):
    kwargs = dict(precision=args.precision, examples=args.examples, batch=args.batch,
                  seq=args.seq, epochs=args.epochs, min_length=args.min_length)
    if args.worker == "ours":
        rows = ours(jit_compile=args.jit_compile, steps_per_execution=args.steps_per_execution,
                    **kwargs)
    else:
        rows = peer(**kwargs)
    workers.report(rows)


def _spawn(side, precision, args):
    argv = ["--worker", side, "--precision", precision, "--examples", str(args.examples),
            "--batch", str(args.batch), "--seq", str(args.seq), "--epochs", str(args.epochs),
            "--min_length", str(args.min_length),
            "--steps_per_execution", str(args.steps_per_execution)]
    if args.jit_compile:
        argv.append("--jit_compile")
    return workers.run_worker("benchmarks.finetune_throughput", argv, f"{side} {precision}")


def run(precisions=("float32", "bfloat16"), examples=256, batch=32, seq=64, epochs=4,
        repeats=2, jit_compile=False, steps_per_execution=1, min_length=16):
    """Alternates fresh processes of both sides; one result row per precision."""
    import torch
    import transformers

    args = argparse.Namespace(examples=examples, batch=batch, seq=seq, epochs=epochs,
                              min_length=min_length,
                              jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    results = []
    for precision in precisions:
        epochs_of = {"ours": [], "peer": []}
        for _ in range(repeats):
            for side in ("ours", "peer"):
                epochs_of[side] += _spawn(side, precision, args)
        rates = {side: [r["examples_per_s"] for r in workers.quiet(rows)]
                 for side, rows in epochs_of.items()}
        other = [r["other_cpu"] for rows in epochs_of.values()
                 for r in workers.quiet(rows)]
        ours_rate, peer_rate = (statistics.median(rates[s]) for s in ("ours", "peer"))
        row = {"case": "finetune_classifier", "model": "L6_H384_A12 vocab 30522",
               "precision": precision, "batch": batch, "seq_len": seq, "min_length": min_length,
               "examples_per_epoch": examples, "timed_epochs_per_process": epochs,
               "processes_per_side": repeats, "jit_compile": jit_compile,
               "steps_per_execution": steps_per_execution,
               "ours_examples_per_s": ours_rate, "peer_examples_per_s": peer_rate,
               "ours_range": [min(rates["ours"]), max(rates["ours"])],
               "peer_range": [min(rates["peer"]), max(rates["peer"])],
               "other_cpu_max": max(other),
               "epochs_counted": {s: len(rates[s]) for s in rates},
               "epochs_run": {s: len(rows) for s, rows in epochs_of.items()},
               "peer": f"transformers {transformers.__version__} / torch {torch.__version__}",
               "speedup": ours_rate / peer_rate}
        results.append(row)
        print(f"fine-tune {precision:>8}: ours {ours_rate:6.1f} ex/s "
              f"({row['ours_range'][0]:.1f}-{row['ours_range'][1]:.1f}) | HF {peer_rate:6.1f} "
              f"({row['peer_range'][0]:.1f}-{row['peer_range'][1]:.1f}) | ratio "
              f"{row['speedup']:.2f}x | other processes' CPU <= {100 * max(other):.0f}% "
              f"(epochs counted: ours {len(rates['ours'])}/{len(epochs_of['ours'])}, "
              f"HF {len(rates['peer'])}/{len(epochs_of['peer'])})",
              flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16"])
    parser.add_argument("--examples", type=int, default=256, help="Examples per epoch.")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4, help="Timed epochs per process.")
    parser.add_argument("--min_length", type=int, default=16,
                        help="Shortest example (lengths are uniform up to --seq); --seq for no padding.")
    parser.add_argument("--repeats", type=int, default=2, help="Processes per side.")
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--steps_per_execution", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", choices=["ours", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    results = run(args.precisions, args.examples, args.batch, args.seq, args.epochs,
                  args.repeats, args.jit_compile, args.steps_per_execution, args.min_length)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
