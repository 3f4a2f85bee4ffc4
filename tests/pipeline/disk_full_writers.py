"""Runs the project's writers into a "full disk", then again with space; prints JSON.

`python -m tests.pipeline.disk_full_writers WORK_DIR LIMIT_BYTES` (run by
`test_disk_full.py` in a subprocess of its own). The disk is made full without
privileges: `RLIMIT_FSIZE` makes every write past LIMIT_BYTES fail with EFBIG, and
SIGXFSZ is ignored so that the failure is an `OSError` (or the library's error),
not a dead process. For each writer the soft limit is lowered, the writer runs and
fails, what a reader would see is recorded, then the limit is lifted and the same
call is made again.

Writers: a Beam job writing shards (ExampleGen), a pre-training checkpoint
(`keras_bert.training.PeriodicCheckpoint`), an export (`keras_bert.export`) and a
push into the serving base path (`components.push`).
"""

import glob
import json
import os
import random
import resource
import signal
import sys
import time
import traceback


def _corpus(path, words=40000):
    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(3000)]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(words // 12):
            f.write(" ".join(rng.choice(vocab) for _ in range(12)).capitalize() + ".")
            f.write("\n\n" if i % 8 == 7 else " ")


def _shards(work):
    from components import example_gen
    corpus = os.path.join(work, "corpus", "a.txt")
    if not os.path.exists(corpus):
        _corpus(corpus)
    out = os.path.join(work, "documents")
    spec = example_gen.ExampleGenSpec(input_pattern=corpus, output_dir=out)

    def write():
        example_gen.run(spec, ["--runner=DirectRunner"])

    def visible():
        return sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "documents-*")))

    return write, visible


def _checkpoint(work):
    import keras
    import numpy as np

    from keras_bert import training
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.train_on_batch(np.ones((4, 256), np.float32), np.zeros((4, 2), np.float32))
    directory = os.path.join(work, "checkpoints")
    saver = training.PeriodicCheckpoint(directory, every_n_steps=1)
    saver.set_model(model)

    def write():
        saver.save()

    def visible():
        import tensorflow as tf
        latest = tf.train.latest_checkpoint(directory)
        if latest:
            # Whatever the checkpoint state names must restore completely.
            check = training.PeriodicCheckpoint(directory, every_n_steps=1)
            check.set_model(model)
            check.restore_latest()
        return [os.path.basename(latest)] if latest else []

    return write, visible


def _export(work):
    import keras

    from keras_bert import checkpoints, export
    from keras_bert.config import BertConfig
    vocab = os.path.join(work, "vocab.txt")
    os.makedirs(work, exist_ok=True)
    with open(vocab, "w", encoding="utf-8") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "short", "example",
                           "another", "."]) + "\n")
    keras.utils.set_random_seed(0)
    config = BertConfig(vocab_size=10, hidden_size=128, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=256, max_position_embeddings=32)
    encoder = checkpoints.build_model(config, "encoder")
    base = os.path.join(work, "exports")

    def write():
        export.export_saved_model(encoder, base, "m", vocab, max_seq_length=16, version=1,
                                  task="embedding")

    def visible():
        return _versions(os.path.join(base, "m"))

    return write, visible


def _versions(model_base):
    """Integer folders a model server would try to load."""
    if not os.path.isdir(model_base):
        return []
    return sorted(n for n in os.listdir(model_base) if n.isdigit())


def _push(work):
    import tensorflow as tf

    from components import push

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.ones([64, 1024]))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, text):
            return {"n": tf.strings.length(text) + tf.cast(tf.reduce_sum(self.w), tf.int32) * 0}

    export_dir = os.path.join(work, "to_push", "m", "1")
    if not os.path.exists(export_dir):
        module = Module()
        tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
    blessing = os.path.join(work, "to_push", "blessing.json")
    with open(blessing, "w") as f:
        json.dump({"blessed": True, "model": os.path.abspath(export_dir)}, f)
    spec = push.PushSpec(export_dir=export_dir, blessing=blessing,
                         serving_base=os.path.join(work, "serving"), model_name="m")

    def write():
        push.run(spec)

    def visible():
        return _versions(spec.model_base_path)

    return write, visible


WRITERS = {"shards": _shards, "checkpoint": _checkpoint, "export": _export, "push": _push}


def main(argv):
    work, limit = argv[0], int(argv[1])
    names = argv[2:] or list(WRITERS)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    results = {}
    for name in names:
        started = time.monotonic()
        write, visible = WRITERS[name](os.path.join(work, name))
        result = results[name] = {}
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            write()
            result["error"] = None
        except Exception as exc:  # The error a user sees, as they see it.
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        result["visible_after_failure"] = visible()
        try:
            write()
            result["visible_after_rerun"] = visible()
        except Exception:
            result["rerun_error"] = traceback.format_exc()[-3000:]
        result["seconds"] = round(time.monotonic() - started, 1)
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
