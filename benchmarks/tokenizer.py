"""Benchmark: WordPiece tokenization speed, ours vs Hugging Face and the original.

On one real corpus (by default the project's own default corpus, built from the
standard library's documentation by `components.default_data`), one line per text,
MB/s of raw UTF-8 text for:

- `in-graph`: `InGraphBertTokenizer.tokenize` in a `tf.function`, over string
  tensors of `--batch_size` lines (its input in `tf.data` and in a SavedModel);
- `python-batch`: `BertTokenizer.token_ids_batch` on the list of Python strings
  (conversion to tensors and back to lists included);
- `hf-tokenizers`: Hugging Face `tokenizers`' `BertWordPieceTokenizer` (Rust),
  `encode_batch(lines, add_special_tokens=False)`;
- `original`: google-research/bert's `FullTokenizer` (`tokenize` then
  `convert_tokens_to_ids`, line by line), from a checkout given with
  `--original_src DIR` (its `tokenization.py` is imported from there; the project
  does not include it). Skipped when not given.

Everyone runs on one thread: TensorFlow's intra- and inter-op pools have one
thread, and `RAYON_NUM_THREADS=1`, `TOKENIZERS_PARALLELISM=false` are set before
`tokenizers` is imported. The peers take turns in every round (so that a busy
machine slows all alike); each one's best round is reported, with the spread. Ratios
are peer time / our time (above 1: we are faster). Lines whose ids differ from the
original's are counted (from our Python per-text path when no original is given).

    python -m benchmarks.tokenizer [--original_src bert/] [--corpus 'dir/*.txt'] [--vocab vocab.txt]
"""

import argparse
import glob
import importlib
import json
import os
import shutil
import sys
import tempfile
import time

from components import cli

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


def default_corpus(directory):
    """Builds the project's default corpus under `directory`; returns its glob."""
    from components import default_data

    return default_data.build(default_data.DefaultDataSpec(os.path.join(directory, "data")))[
        "corpus_glob"]


def learn_vocab(lines, path, vocab_size, do_lower_case):
    """Learns a WordPiece vocabulary of `vocab_size` tokens from the corpus itself with
    the project's learner."""
    from keras_bert import vocab_learner

    counts = vocab_learner.count_words(lines, do_lower_case)
    vocab = vocab_learner.learn_wordpiece_vocab(counts, vocab_size, do_lower_case=do_lower_case)
    vocab_learner.write_vocab(vocab, path)
    return len(vocab)


def load_original(original_src):
    """google-research/bert's `tokenization` module, imported from a checkout.

    It is TF1 code (`tf.gfile`); `tf.compat.v1` is put in place of `tensorflow` while
    it is imported, then the real module is put back.
    """
    import tensorflow as tf

    sys.path.insert(0, os.path.abspath(original_src))
    saved = sys.modules["tensorflow"]
    sys.modules["tensorflow"] = tf.compat.v1
    try:
        return importlib.import_module("tokenization")
    finally:
        sys.modules["tensorflow"] = saved
        sys.path.pop(0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=None,
                        help="glob of text files (one text per line); default: the default corpus")
    parser.add_argument("--vocab", default=None,
                        help="vocab.txt; default: one learned from the corpus")
    parser.add_argument("--vocab_size", type=int, default=6591,
                        help="of the learned vocabulary; the default is what the default "
                             "corpus's pieces seen at least twice give")
    cli.add_bool_flag(parser, "do_lower_case", True, "Uncased tokenization.")
    parser.add_argument("--original_src", default=None,
                        help="checkout of google-research/bert (for the original FullTokenizer)")
    parser.add_argument("--batch_size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    do_lower_case = args.do_lower_case

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tokenizers import BertWordPieceTokenizer

    from keras_bert.tokenizer import BertTokenizer, InGraphBertTokenizer

    workdir = tempfile.mkdtemp(prefix="tokenizer-bench-")
    try:
        corpus = args.corpus or default_corpus(workdir)
        lines = []
        for path in sorted(glob.glob(corpus)):
            with open(path, encoding="utf-8") as f:
                lines += [line.rstrip("\n") for line in f]
        if not lines:
            sys.exit(f"no lines in {corpus}")
        num_bytes = sum(len(line.encode("utf-8")) for line in lines)
        vocab = args.vocab
        if vocab is None:
            vocab = os.path.join(workdir, "vocab.txt")
            size = learn_vocab(lines, vocab, args.vocab_size, do_lower_case)
        else:
            size = sum(1 for _ in open(vocab, encoding="utf-8"))
        print(f"corpus {corpus}: {len(lines)} lines, {num_bytes / 1e6:.2f} MB; vocab {vocab} "
              f"({size} tokens), {'uncased' if do_lower_case else 'cased'}", flush=True)

        graph = InGraphBertTokenizer(vocab, do_lower_case=do_lower_case)
        python = BertTokenizer.from_vocab(vocab, do_lower_case=do_lower_case)
        hf = BertWordPieceTokenizer(vocab, lowercase=do_lower_case, clean_text=True,
                                    handle_chinese_chars=True, strip_accents=do_lower_case)
        original = None
        if args.original_src:
            tokenization = load_original(args.original_src)
            original = tokenization.FullTokenizer(vocab, do_lower_case=do_lower_case)

        batches = [tf.constant(lines[i:i + args.batch_size])
                   for i in range(0, len(lines), args.batch_size)]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def graph_ids(texts):
            ids = graph.tokenize(texts)
            return ids.flat_values, ids.row_splits

        def run_graph():
            out = []
            for batch in batches:
                values, splits = graph_ids(batch)
                values, splits = values.numpy().tolist(), splits.numpy().tolist()
                out += [values[a:b] for a, b in zip(splits[:-1], splits[1:])]
            return out

        peers = {
            "in-graph": run_graph,
            "python-batch": lambda: python.token_ids_batch(lines),
            "hf-tokenizers": lambda: [e.ids for e in hf.encode_batch(lines, add_special_tokens=False)],
        }
        if original is not None:
            peers["original"] = lambda: [original.convert_tokens_to_ids(original.tokenize(line))
                                         for line in lines]
        outputs = {name: run() for name, run in peers.items()}  # warm-up (traces, first builds)
        times = {name: [] for name in peers}
        for r in range(args.rounds):
            for name, run in peers.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{name} {times[name][-1]:.3f}s" for name in peers), flush=True)

        if original is not None:
            reference, reference_name = outputs["original"], "original FullTokenizer"
        else:
            reference = [python.convert_tokens_to_ids(python.tokenize(line)) for line in lines]
            reference_name = "our Python per-text path"
        differing = {name: sum(a != b for a, b in zip(out, reference)) for name, out in outputs.items()}

        load = os.getloadavg()
        ours = min(times["in-graph"])
        print(f"\n{'peer':16s} {'MB/s':>8s} {'best s':>8s} {'spread s':>9s} {'peer/in-graph':>14s} "
              f"{'differing lines':>16s}")
        results = []
        for name in peers:
            best = min(times[name])
            spread = max(times[name]) - best
            ratio = best / ours
            print(f"{name:16s} {num_bytes / best / 1e6:8.2f} {best:8.3f} {spread:9.3f} {ratio:14.2f} "
                  f"{differing[name]:16d}")
            results.append({"case": "tokenizer", "peer": name, "mb_per_s": num_bytes / best / 1e6,
                            "best_s": best, "times_s": times[name], "time_vs_in_graph": ratio,
                            "differing_lines": differing[name]})
        batch = min(times["python-batch"])
        print(f"\nratios (peer time / our time): hf-tokenizers / in-graph = "
              f"{min(times['hf-tokenizers']) / ours:.2f}, hf-tokenizers / python-batch = "
              f"{min(times['hf-tokenizers']) / batch:.2f}"
              + (f", original / in-graph = {min(times['original']) / ours:.2f}, original / "
                 f"python-batch = {min(times['original']) / batch:.2f}" if original is not None else ""))
        print(f"differing lines counted against the {reference_name} ({len(lines)} lines); "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"lines": len(lines), "bytes": num_bytes, "reference": reference_name,
                           "load_average": load, "results": results}, f, indent=2)
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
