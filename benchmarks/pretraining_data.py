"""Benchmark: the PretrainingData Beam job vs google-research/bert's own script.

Compares, on the same synthesized corpus and flags, in one run:

- `original`: google-research/bert's `create_pretraining_data.py` itself, from a
  checkout given with `--original_src` (not part of this project), under
  `tf.compat.v1`; its output files are counted after it exits;
- `reference`: a compact re-implementation of google-research/bert's
  `create_pretraining_data.py` control flow (written here for the comparison): every
  document tokenized into memory, shuffled, `dupe_factor` passes of
  `create_instances_from_document` with one global `random.Random`, every instance
  held in memory and shuffled, then written round-robin to the output files;
- `beam-1`: `components.pretraining_data` on the DirectRunner, one in-process worker;
- `beam-2`: the same job with `--direct_num_workers=2 --direct_running_mode=multi_processing`.

Each run is a fresh child process; its speed is instances per second of wall time
(start-up included) and its CPU time (user + system, worker processes included, which
the load of a shared machine disturbs less), its memory the peak of the summed RSS of
its process tree (the runner and its SDK workers), sampled every 50 ms, with the peaks of the main process
and of the largest worker process alongside. The corpus is Python's
`pydoc_data.topics` (one document per topic, one sentence per non-empty line, about
0.45 MB), then 10 times as much (copies in more files) to show how memory grows with
the corpus. Ratios printed at the end: wall time of the baseline / ours (above 1:
ours is faster) and our peak RSS as a share of the baseline's.

    python -m benchmarks.pretraining_data [--scales 1 10] [--dupe_factor 5] [--runs reference beam-2]
    python -m benchmarks.pretraining_data --original_src ~/src/bert --scales 40 --runs original beam-1 beam-2
"""

import argparse
import collections
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks import workers
from components import cli

DEFAULT_VOCAB = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "pretraining", "vocab.txt"
)
RUNS = ("original", "reference", "beam-1", "beam-2")
FILES_PER_COPY = 4


# --- corpus -----------------------------------------------------------------------


def synthesize_corpus(directory, copies):
    """Writes `copies` copies of the pydoc topics corpus in the original format.

    Returns the glob of the written files.
    """
    import pydoc_data.topics

    os.makedirs(directory, exist_ok=True)
    names = sorted(pydoc_data.topics.topics)
    documents = []
    for name in names:
        lines = [line.strip() for line in pydoc_data.topics.topics[name].splitlines() if line.strip()]
        if lines:
            documents.append("\n".join(lines))
    for copy in range(copies):
        for part in range(FILES_PER_COPY):
            with open(os.path.join(directory, f"copy{copy:03d}-part{part}.txt"), "w", encoding="utf-8") as out:
                out.write("\n\n".join(documents[part::FILES_PER_COPY]) + "\n")
    return os.path.join(directory, "*.txt")


# --- the original algorithm, compactly ---------------------------------------------


def _reference_truncate(tokens_a, tokens_b, max_num_tokens, rng):
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def _reference_mask(tokens, masked_lm_prob, max_predictions, vocab_words, rng, whole_word_mask):
    cand_indexes = []
    for i, token in enumerate(tokens):
        if token == "[CLS]" or token == "[SEP]":
            continue
        if whole_word_mask and cand_indexes and token.startswith("##"):
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])
    rng.shuffle(cand_indexes)
    output = list(tokens)
    num_to_predict = min(max_predictions, max(1, int(round(len(tokens) * masked_lm_prob))))
    masked, covered = [], set()
    for index_set in cand_indexes:
        if len(masked) >= num_to_predict:
            break
        if len(masked) + len(index_set) > num_to_predict:
            continue
        if any(i in covered for i in index_set):
            continue
        for index in index_set:
            covered.add(index)
            if rng.random() < 0.8:
                token = "[MASK]"
            elif rng.random() < 0.5:
                token = tokens[index]
            else:
                token = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            output[index] = token
            masked.append((index, tokens[index]))
    masked.sort()
    return output, [i for i, _ in masked], [t for _, t in masked]


def _reference_document(all_documents, document_index, flags, vocab_words, rng):
    document = all_documents[document_index]
    max_num_tokens = flags["max_seq_length"] - 3
    target = max_num_tokens
    if rng.random() < flags["short_seq_prob"]:
        target = rng.randint(2, max_num_tokens)
    instances, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if chunk:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for s in chunk[:a_end] for t in s]
                tokens_b = []
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    for _ in range(10):
                        random_index = rng.randint(0, len(all_documents) - 1)
                        if random_index != document_index:
                            break
                    other = all_documents[random_index]
                    for j in range(rng.randint(0, len(other) - 1), len(other)):
                        tokens_b.extend(other[j])
                        if len(tokens_b) >= target - len(tokens_a):
                            break
                    i -= len(chunk) - a_end
                else:
                    is_random_next = False
                    tokens_b = [t for s in chunk[a_end:] for t in s]
                _reference_truncate(tokens_a, tokens_b, max_num_tokens, rng)
                tokens = ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
                segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                tokens, positions, labels = _reference_mask(
                    tokens, flags["masked_lm_prob"], flags["max_predictions_per_seq"], vocab_words, rng,
                    flags["whole_word_mask"],
                )
                instances.append((tokens, segment_ids, is_random_next, positions, labels))
            chunk, length = [], 0
        i += 1
    return instances


def run_reference(corpus_glob, vocab_path, output_dir, flags):
    """The original's behaviour: all in memory, one process. Returns the instance count."""
    import glob

    import tensorflow as tf

    from keras_bert.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_vocab(vocab_path, do_lower_case=True)
    rng = random.Random(flags["random_seed"])
    all_documents = [[]]
    for path in sorted(glob.glob(corpus_glob)):
        with open(path, encoding="utf-8", errors="ignore") as reader:
            for line in reader:
                line = line.strip()
                if not line:
                    all_documents.append([])
                else:
                    tokens = tokenizer.tokenize(line)
                    if tokens:
                        all_documents[-1].append(tokens)
    all_documents = [d for d in all_documents if d]
    rng.shuffle(all_documents)
    vocab_words = list(tokenizer.vocab.keys())
    instances = []
    for _ in range(flags["dupe_factor"]):
        for index in range(len(all_documents)):
            instances.extend(_reference_document(all_documents, index, flags, vocab_words, rng))
    rng.shuffle(instances)

    def int_feature(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    max_seq, max_pred = flags["max_seq_length"], flags["max_predictions_per_seq"]
    writers = [
        tf.io.TFRecordWriter(os.path.join(output_dir, f"reference-{i:05d}.tfrecord"))
        for i in range(flags["num_shards"])
    ]
    for n, (tokens, segment_ids, is_random_next, positions, labels) in enumerate(instances):
        input_ids = tokenizer.convert_tokens_to_ids(tokens)
        pad = max_seq - len(input_ids)
        pred_pad = max_pred - len(positions)
        feature = collections.OrderedDict()
        feature["input_ids"] = int_feature(input_ids + [0] * pad)
        feature["input_mask"] = int_feature([1] * len(input_ids) + [0] * pad)
        feature["segment_ids"] = int_feature(list(segment_ids) + [0] * pad)
        feature["masked_lm_positions"] = int_feature(positions + [0] * pred_pad)
        feature["masked_lm_ids"] = int_feature(tokenizer.convert_tokens_to_ids(labels) + [0] * pred_pad)
        feature["masked_lm_weights"] = tf.train.Feature(
            float_list=tf.train.FloatList(value=[1.0] * len(positions) + [0.0] * pred_pad)
        )
        feature["next_sentence_labels"] = int_feature([1 if is_random_next else 0])
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        writers[n % len(writers)].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return len(instances)


# --- google-research/bert's own script ----------------------------------------------


def run_original(original_src, corpus_glob, vocab_path, output_dir, flags):
    """Runs `create_pretraining_data.py` from a checkout of google-research/bert.

    The script is TF1 code (`tf.flags`, `tf.gfile`, `tf.python_io`, `tf.logging`);
    `tf.compat.v1` has all of them, so it is put in place of `tensorflow` for the
    script's own imports. Nothing of the script is copied.

    Returns:
        The output file paths.
    """
    import tensorflow as tf

    sys.modules["tensorflow"] = tf.compat.v1
    sys.path.insert(0, os.path.abspath(original_src))
    import create_pretraining_data as original  # pylint: disable=import-error

    outputs = [os.path.join(output_dir, f"original-{i:05d}.tfrecord") for i in range(flags["num_shards"])]
    argv = [
        "create_pretraining_data.py",
        f"--input_file={corpus_glob}",
        f"--output_file={','.join(outputs)}",
        f"--vocab_file={vocab_path}",
        "--do_lower_case=True",
        f"--do_whole_word_mask={flags['whole_word_mask']}",
        f"--max_seq_length={flags['max_seq_length']}",
        f"--max_predictions_per_seq={flags['max_predictions_per_seq']}",
        f"--random_seed={flags['random_seed']}",
        f"--dupe_factor={flags['dupe_factor']}",
        f"--masked_lm_prob={flags['masked_lm_prob']}",
        f"--short_seq_prob={flags['short_seq_prob']}",
    ]
    original.FLAGS(argv)
    original.main(None)
    return outputs


def count_tfrecords(paths):
    """Records in TFRecord files, from their framing (length, CRC, data, CRC)."""
    count = 0
    for path in paths:
        with open(path, "rb") as f:
            while True:
                header = f.read(12)
                if len(header) < 12:
                    break
                f.seek(int.from_bytes(header[:8], "little") + 4, os.SEEK_CUR)
                count += 1
    return count


# --- child process entry points ----------------------------------------------------


def _child(args):
    flags = json.loads(args.flags)
    started = time.perf_counter()
    if args.child == "original":
        # Counted by the parent once the process has ended, so not in its wall time.
        instances = {"paths": run_original(args.original_src, args.corpus, args.vocab, args.output, flags)}
    elif args.child == "reference":
        instances = run_reference(args.corpus, args.vocab, args.output, flags)
    else:
        from components import pretraining_data

        spec = pretraining_data.PretrainingDataSpec(
            input_pattern=args.corpus, vocab_path=args.vocab, output_dir=args.output, **flags
        )
        beam_args = []
        if args.child == "beam-2":
            beam_args = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
        instances = pretraining_data.run(spec, beam_args)["instances"]
    workers.report({"instances": instances, "seconds": time.perf_counter() - started})


# --- measurement ---------------------------------------------------------------------


def _tree_rss_bytes(root_pid):
    """RSS in bytes of `root_pid` and of each of its descendants, from /proc (Linux)."""
    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children[ppid].append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    rss, stack = {}, [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss[pid] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return rss


def measure(run, corpus, vocab, flags, workdir, original_src=None):
    output = tempfile.mkdtemp(prefix=f"{run}-", dir=workdir)
    command = [
        sys.executable, "-m", "benchmarks.pretraining_data", "--child", run, "--corpus", corpus,
        "--vocab", vocab, "--output", output, "--flags", json.dumps(flags),
    ]
    if original_src:
        command += ["--original_src", original_src]
    started = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = {"tree": 0, "main": 0, "worker": 0}
    loads = []

    def sample():
        while process.poll() is None:
            loads.append(os.getloadavg()[0])
            rss = _tree_rss_bytes(process.pid)
            peak["tree"] = max(peak["tree"], sum(rss.values()))
            peak["main"] = max(peak["main"], rss.get(process.pid, 0))
            peak["worker"] = max([peak["worker"]] + [v for pid, v in rss.items() if pid != process.pid])
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    # Reaped descendants (the runner's worker processes) count in the child's usage.
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    if process.returncode != 0:
        raise RuntimeError(f"{run} failed with exit code {process.returncode}:\n{stdout[-3000:]}")
    result = workers.parse_result(stdout)
    if result is None:
        raise RuntimeError(f"{run} reported no result:\n{stdout[-3000:]}")
    if isinstance(result["instances"], dict):
        result["instances"] = count_tfrecords(result["instances"]["paths"])
    return {
        "run": run,
        "instances": result["instances"],
        "wall_s": wall,
        "cpu_s": cpu,
        "mean_load": sum(loads) / len(loads) if loads else None,
        "instances_per_s": result["instances"] / wall,
        "peak_rss_mib": peak["tree"] / 2**20,
        "peak_main_process_mib": peak["main"] / 2**20,
        "peak_worker_process_mib": peak["worker"] / 2**20,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--flags", help=argparse.SUPPRESS)
    parser.add_argument("--vocab", default=DEFAULT_VOCAB)
    parser.add_argument(
        "--original_src",
        default=None,
        help="A checkout of google-research/bert: also run its create_pretraining_data.py ('original').",
    )
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10], help="Corpus copies per run.")
    parser.add_argument(
        "--runs", nargs="+", choices=RUNS, default=None,
        help="Defaults to all (without 'original' when --original_src is not given).",
    )
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--max_predictions_per_seq", type=int, default=20)
    parser.add_argument("--masked_lm_prob", type=float, default=0.15)
    parser.add_argument("--dupe_factor", type=int, default=5)
    parser.add_argument("--short_seq_prob", type=float, default=0.1)
    cli.add_bool_flag(parser, "whole_word_mask", False, "Whole-word masking.")
    parser.add_argument("--num_shards", type=int, default=4)
    parser.add_argument("--random_seed", type=int, default=12345)
    parser.add_argument("--workdir", default=None, help="Scratch directory. Defaults to a temporary one.")
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    flags = {
        name: getattr(args, name)
        for name in (
            "max_seq_length", "max_predictions_per_seq", "masked_lm_prob", "dupe_factor", "short_seq_prob",
            "whole_word_mask", "num_shards", "random_seed",
        )
    }
    runs = args.runs or [r for r in RUNS if r != "original" or args.original_src]
    if "original" in runs and not args.original_src:
        parser.error("the 'original' run needs --original_src")
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-pretraining-")
    try:
        print(f"flags: {json.dumps(flags)}  cpus: {os.cpu_count()}  workdir: {workdir}")
        results = []
        for scale in args.scales:
            corpus = synthesize_corpus(os.path.join(workdir, f"corpus-x{scale}"), scale)
            size = sum(os.path.getsize(os.path.join(os.path.dirname(corpus), f))
                       for f in os.listdir(os.path.dirname(corpus)))
            for run in runs:
                result = measure(run, corpus, os.path.abspath(args.vocab), flags, workdir, args.original_src)
                result.update(scale=scale, corpus_mib=size / 2**20)
                results.append(result)
                print(
                    f"x{scale:<3} {run:<10} {result['instances']:>8} instances {result['wall_s']:8.1f} s "
                    f"(CPU {result['cpu_s']:.1f} s, load {result['mean_load'] or 0:.1f}) "
                    f"{result['instances_per_s']:7.0f} inst/s  peak RSS {result['peak_rss_mib']:6.0f} MiB "
                    f"(main {result['peak_main_process_mib']:.0f}, largest worker "
                    f"{result['peak_worker_process_mib']:.0f}; corpus {result['corpus_mib']:.1f} MiB)",
                    flush=True,
                )
        by = {(r["scale"], r["run"]): r for r in results}
        for scale in args.scales:
            for baseline in ("original", "reference"):
                base = by.get((scale, baseline))
                for run in ("beam-1", "beam-2"):
                    if base and (scale, run) in by:
                        ours = by[(scale, run)]
                        print(
                            f"x{scale}: {run} vs {baseline}: {base['wall_s'] / ours['wall_s']:.2f}x faster (wall), "
                            f"{base['cpu_s'] / ours['cpu_s']:.2f}x less CPU time, "
                            f"{ours['instances_per_s'] / base['instances_per_s']:.2f}x instances/s, "
                            f"peak RSS {ours['peak_rss_mib'] / base['peak_rss_mib']:.2f} of {baseline}'s"
                        )
        if len(args.scales) > 1:
            low, high = min(args.scales), max(args.scales)
            for run in runs:
                if (low, run) in by and (high, run) in by:
                    a, b = by[(low, run)], by[(high, run)]
                    print(f"{run}: peak RSS x{low} -> x{high}: {a['peak_rss_mib']:.0f} -> {b['peak_rss_mib']:.0f} MiB "
                          f"({b['peak_rss_mib'] / a['peak_rss_mib']:.2f}x, +{b['peak_rss_mib'] - a['peak_rss_mib']:.0f} MiB)"
                          + (f"; largest worker {a['peak_worker_process_mib']:.0f} -> {b['peak_worker_process_mib']:.0f} MiB"
                             if b["peak_worker_process_mib"] else ""))
        return results
    finally:
        if not args.workdir:  # a scratch folder of our own: the runs' outputs are GBs at x10
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
