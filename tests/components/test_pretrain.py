"""Pretrain stage: learning on real text, original records, kill -9 resume, two workers, NaN guard, JAX."""

import collections
import dataclasses
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from components import pretrain
from keras_bert import checkpoints, features, masking, optimization, training
from keras_bert.tokenizer import basic_tokenize

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --------------------------------------------------------------------------------------
# Data builders.


def _int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def write_records(path, instances, max_seq_length, max_predictions_per_seq):
    """Writes (ids, positions, labels, nsp_label) instances as the original does."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for ids, positions, labels, nsp in instances:
            pad = max_seq_length - len(ids)
            preds_pad = max_predictions_per_seq - len(positions)
            feats = {
                features.INPUT_IDS: _int_feature(list(ids) + [0] * pad),
                features.INPUT_MASK: _int_feature([1] * len(ids) + [0] * pad),
                features.SEGMENT_IDS: _int_feature([0] * max_seq_length),
                features.MASKED_LM_POSITIONS: _int_feature(list(positions) + [0] * preds_pad),
                features.MASKED_LM_IDS: _int_feature(list(labels) + [0] * preds_pad),
                features.MASKED_LM_WEIGHTS: tf.train.Feature(float_list=tf.train.FloatList(
                    value=[1.0] * len(positions) + [0.0] * preds_pad)),
                features.NEXT_SENTENCE_LABELS: _int_feature([nsp]),
            }
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feats)).SerializeToString())


def build_pydoc_corpus(folder, max_seq_length=64, max_predictions_per_seq=10, min_count=3,
                       dupe_factor=3, seed=0):
    """Masked-LM records from `pydoc_data.topics`: every 10th topic held out.

    Words come from the project's `basic_tokenize` (lower-cased, punctuation split),
    the vocabulary is every training word seen `min_count` times (others are [UNK]),
    sequences are consecutive `[CLS] words [SEP]` chunks, masked with the project's
    implementation of the original algorithm.

    Returns:
        dict with train/eval globs, vocab path, and the unigram baselines in nats:
        `unigram_entropy` (of the training tokens) and `unigram_heldout_xent` (the
        training unigram distribution scored on the held-out masked labels).
    """
    from pydoc_data import topics
    names = sorted(topics.topics)
    heldout_names = set(names[::10])
    docs = {name: basic_tokenize(topics.topics[name]) for name in names}
    counts = collections.Counter(w for n in names if n not in heldout_names for w in docs[n])
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    vocab = list(features.SPECIAL_TOKENS) + words
    index = {w: i for i, w in enumerate(vocab)}
    unk, cls, sep, mask_id = (index[t] for t in (features.UNK_TOKEN, features.CLS_TOKEN,
                                                 features.SEP_TOKEN, features.MASK_TOKEN))
    os.makedirs(folder, exist_ok=True)
    vocab_path = os.path.join(folder, "vocab.txt")
    with open(vocab_path, "w") as f:
        f.write("\n".join(vocab) + "\n")

    def sequences(doc_names):
        out = []
        for name in sorted(doc_names):
            ids = [index.get(w, unk) for w in docs[name]]
            body = max_seq_length - 2
            out += [[cls] + ids[i:i + body] + [sep] for i in range(0, len(ids), body)
                    if len(ids[i:i + body]) >= 8]
        return out

    train_seqs = sequences(n for n in names if n not in heldout_names)
    eval_seqs = sequences(heldout_names)
    token_counts = collections.Counter(t for s in train_seqs for t in s[1:-1])
    total = sum(token_counts.values())
    prob = {t: c / total for t, c in token_counts.items()}
    entropy = -sum(p * math.log(p) for p in prob.values())

    rng = random.Random(seed)
    special = {cls, sep, index[features.PAD_TOKEN]}

    def instances(seqs, copies):
        out = []
        for _ in range(copies):
            for ids in seqs:
                m = masking.create_masked_lm_predictions(
                    ids, masked_lm_prob=0.15, max_predictions_per_seq=max_predictions_per_seq,
                    vocab_size=len(vocab), mask_id=mask_id, special_ids=special, rng=rng)
                out.append((m.output_ids, m.positions, m.label_ids, 0))
        rng.shuffle(out)
        return out

    train = instances(train_seqs, dupe_factor)
    heldout = instances(eval_seqs, 1)
    for shard in range(2):
        write_records(os.path.join(folder, f"train-{shard}.tfrecord"), train[shard::2],
                      max_seq_length, max_predictions_per_seq)
    write_records(os.path.join(folder, "heldout-0.tfrecord"), heldout, max_seq_length,
                  max_predictions_per_seq)
    labels = [label for _, _, ls, _ in heldout for label in ls]
    floor = min(prob.values())
    xent = -sum(math.log(prob.get(label, floor)) for label in labels) / len(labels)
    return {"train": os.path.join(folder, "train-*.tfrecord"),
            "eval": os.path.join(folder, "heldout-*.tfrecord"), "vocab": vocab_path,
            "vocab_size": len(vocab), "train_records": len(train), "eval_records": len(heldout),
            "unigram_entropy": entropy, "unigram_heldout_xent": xent}


@pytest.fixture(scope="module")
def original(fixtures_dir):
    folder = fixtures_dir / "pretraining_original"
    info = json.loads((folder / "fixture.json").read_text())
    return {"train": str(folder / "train-*.tfrecord"),
            "eval": str(folder / "train-00001-of-00002.tfrecord"),
            "config": str(folder / "bert_config.json"), "vocab": str(folder / "vocab.txt"),
            "max_seq_length": info["max_seq_length"],
            "max_predictions_per_seq": info["max_predictions_per_seq"]}


def _spec(original, output_dir, **overrides):
    values = dict(train_pattern=original["train"], eval_pattern=original["eval"],
                  output_dir=str(output_dir), model=original["config"],
                  vocab_path=original["vocab"], batch_size=8,
                  max_seq_length=original["max_seq_length"],
                  max_predictions_per_seq=original["max_predictions_per_seq"],
                  num_train_steps=20, num_warmup_steps=2, learning_rate=1e-3,
                  checkpoint_every=10, log_every=10, random_seed=7)
    values.update(overrides)
    return pretrain.PretrainSpec(**values)


def _argv(spec):
    """The CLI flags that give `spec`."""
    argv = ["--train", spec.train_pattern, "--output", spec.output_dir, "--model", spec.model,
            "--vocab", spec.vocab_path, "--batch_size", str(spec.batch_size),
            "--max_seq_length", str(spec.max_seq_length),
            "--max_predictions_per_seq", str(spec.max_predictions_per_seq),
            "--num_train_steps", str(spec.num_train_steps),
            "--num_warmup_steps", str(spec.num_warmup_steps),
            "--learning_rate", str(spec.learning_rate),
            "--checkpoint_every", str(spec.checkpoint_every), "--log_every", str(spec.log_every),
            "--random_seed", str(spec.random_seed)]
    if spec.eval_pattern:
        argv += ["--eval", spec.eval_pattern]
    if spec.steps_per_epoch:
        argv += ["--steps_per_epoch", str(spec.steps_per_epoch)]
    return argv


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------
# Tests.


def test_cli_flags_build_the_spec(original, tmp_path):
    spec = _spec(original, tmp_path, steps_per_epoch=5)
    assert pretrain.parse_args(_argv(spec)) == spec
    parsed = pretrain.parse_args(_argv(spec) + [
        "--optimizer", "lamb", "--mixed_precision", "bfloat16", "--jit_compile", "--nouse_nsp",
        "--strategy", "mirrored", "--gradient_accumulation_steps", "4", "--dynamic_masking"])
    assert (parsed.optimizer, parsed.mixed_precision, parsed.jit_compile, parsed.use_nsp,
            parsed.strategy, parsed.gradient_accumulation_steps, parsed.dynamic_masking) == (
        "lamb", "bfloat16", True, False, "mirrored", 4, True)
    with pytest.raises(ValueError, match="dynamic_masking needs vocab_path"):
        _spec(original, tmp_path, dynamic_masking=True, vocab_path=None)


def test_trains_and_evaluates_on_original_format_records(original, tmp_path):
    metrics = pretrain.run(_spec(original, tmp_path / "run"))
    assert metrics["steps"] == 20 and metrics["start_step"] == 0
    for part in ("train", "eval"):
        for key in ("mlm_loss", "mlm_accuracy", "nsp_accuracy"):
            assert math.isfinite(metrics[part][key]), (part, key)
    # A 72-word vocabulary starts at ln(72) = 4.28; 20 steps already learn something.
    assert metrics["eval"]["mlm_loss"] < math.log(72)
    assert metrics["sequences_per_second"] > 0
    stored = json.loads((tmp_path / "run" / pretrain.METRICS_FILE).read_text())
    assert stored["steps"] == 20 and stored["eval"] == metrics["eval"]
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-20")
    loaded = checkpoints.load_pretrained(str(tmp_path / "run" / "export"))
    assert loaded.heads == "pretraining" and loaded.config.vocab_size == 72
    assert not loaded.report.missing and loaded.vocab_path.endswith("vocab.txt")
    assert pretrain.weights_digest(loaded.model) == metrics["weights_sha256"]


def test_lamb_bfloat16_accumulation_mlm_only(original, tmp_path):
    spec = _spec(original, tmp_path, optimizer="lamb", mixed_precision="bfloat16",
                 gradient_accumulation_steps=2, use_nsp=False, num_train_steps=6,
                 checkpoint_every=3, log_every=3)
    metrics = pretrain.run(spec)
    assert metrics["steps"] == 6 and "nsp_accuracy" not in metrics["eval"]
    assert math.isfinite(metrics["eval"]["mlm_loss"])
    assert tf.train.latest_checkpoint(spec.checkpoint_dir).endswith("ckpt-6")
    assert checkpoints.load_pretrained(spec.export_dir).heads == "mlm"


def test_float16_trains_with_loss_scaling_and_resumes(original, tmp_path):
    spec = _spec(original, tmp_path, mixed_precision="float16", num_train_steps=4,
                 checkpoint_every=2, log_every=2, eval_pattern=None)
    metrics = pretrain.run(spec)
    assert metrics["steps"] == 4 and math.isfinite(metrics["train"]["mlm_loss"])
    # Resuming restores the loss-scaled optimizer's checkpoint and continues.
    more = pretrain.run(dataclasses.replace(spec, num_train_steps=6))
    assert (more["start_step"], more["steps"]) == (4, 6)


def test_same_seed_gives_the_same_weights(original, tmp_path):
    # Two training files read in a fixed turn: the record order, and with it every
    # update, repeats. (With --nodeterministic the interleave follows thread timing
    # and these 8 steps ended with three different weights in three runs.)
    spec = _spec(original, tmp_path / "a", num_train_steps=8, checkpoint_every=8,
                 eval_pattern=None)
    first = pretrain.run(spec)
    second = pretrain.run(dataclasses.replace(spec, output_dir=str(tmp_path / "b")))
    assert first["weights_sha256"] == second["weights_sha256"]
    assert pretrain.parse_args(_argv(spec) + ["--nodeterministic"]).deterministic is False


def test_checkpoint_restores_optimizer_state(original, tmp_path):
    spec = _spec(original, tmp_path, num_train_steps=6, checkpoint_every=3, eval_pattern=None)
    pretrain.run(spec)
    model, _, _ = pretrain.build_model(spec)
    model.compile(optimizer=optimization.create_optimizer("adamw", 1e-3, 6, 2))
    ckpt = training.PeriodicCheckpoint(spec.checkpoint_dir, 3)
    ckpt.set_model(model)
    assert ckpt.restore_latest() == 6
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(spec.checkpoint_dir))
    stored = {name: reader.get_tensor(name) for name, _ in
              tf.train.list_variables(spec.checkpoint_dir) if name.startswith("optimizer/_variables/")}
    restored = model.optimizer.variables
    assert len(stored) == len(restored) - 1  # all but the learning-rate-free iteration counter
    assert any(float(np.max(np.abs(v.numpy()))) > 0 for v in model.optimizer._momentums)
    for i, variable in enumerate(restored[1:], start=1):
        key = f"optimizer/_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE"
        if key in stored:
            np.testing.assert_array_equal(variable.numpy(), stored[key])


def test_nan_guard_stops_and_keeps_last_good_checkpoint(original, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain.run(_spec(original, out, num_train_steps=10, checkpoint_every=5))
    assert tf.train.latest_checkpoint(str(out / "checkpoints")).endswith("ckpt-10")
    # Same records with NaN masked_lm_weights: the loss is NaN from the first batch.
    poisoned = tmp_path / "poisoned.tfrecord"
    with tf.io.TFRecordWriter(str(poisoned)) as writer:
        for raw in tf.data.TFRecordDataset(tf.io.gfile.glob(original["train"])):
            example = tf.train.Example.FromString(raw.numpy())
            weights = example.features.feature[features.MASKED_LM_WEIGHTS].float_list.value
            weights[:] = [float("nan")] * len(weights)
            writer.write(example.SerializeToString())
    spec = _spec(original, out, train_pattern=str(poisoned), num_train_steps=30,
                 checkpoint_every=5, eval_pattern=None)
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(_argv(spec))
    assert exit_info.value.code == pretrain.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "training diverged: loss is nan at step 11" in err
    assert "last good checkpoint is" in err and "ckpt-10" in err
    latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
    assert latest.endswith("ckpt-10")
    reader = tf.train.load_checkpoint(latest)
    for name, _ in tf.train.list_variables(latest):
        value = np.asarray(reader.get_tensor(name))
        if value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), name


@pytest.mark.slow
def test_learns_real_text_below_the_unigram_baseline(tmp_path):
    corpus = build_pydoc_corpus(str(tmp_path / "data"), max_seq_length=32,
                                max_predictions_per_seq=5)
    config = {"vocab_size": corpus["vocab_size"], "hidden_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "intermediate_size": 512, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 64}
    (tmp_path / "bert_config.json").write_text(json.dumps(config))
    spec = pretrain.PretrainSpec(
        train_pattern=corpus["train"], eval_pattern=corpus["eval"],
        output_dir=str(tmp_path / "out"), model=str(tmp_path / "bert_config.json"),
        vocab_path=corpus["vocab"], batch_size=32, max_seq_length=32, max_predictions_per_seq=5,
        num_train_steps=800, num_warmup_steps=80, learning_rate=5e-4, checkpoint_every=400,
        steps_per_epoch=100, log_every=100, use_nsp=False, random_seed=1)
    metrics = pretrain.run(spec)
    heldout = metrics["eval"]["mlm_loss"]
    print(f"unigram entropy {corpus['unigram_entropy']:.3f} nats, unigram held-out "
          f"cross-entropy {corpus['unigram_heldout_xent']:.3f}, held-out MLM loss {heldout:.3f} "
          f"(accuracy {metrics['eval']['mlm_accuracy']:.3f}), train {metrics['train']['mlm_loss']:.3f}")
    # The model uses context: on topics it never saw it beats the best context-free
    # predictor of the training tokens by a wide margin.
    assert heldout < corpus["unigram_entropy"] - 0.25
    assert heldout < corpus["unigram_heldout_xent"] - 0.5


def _checkpoint_step(directory):
    latest = tf.train.latest_checkpoint(str(directory))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_sigkill_resumes_from_last_checkpoint(original, tmp_path):
    spec = _spec(original, tmp_path / "run", num_train_steps=400, num_warmup_steps=30,
                 checkpoint_every=20, log_every=10, steps_per_epoch=50)
    cmd = [sys.executable, "-m", "components.pretrain"] + _argv(spec)
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        while _checkpoint_step(spec.checkpoint_dir) < 60:
            assert proc.poll() is None, "the run ended before it could be killed:\n" + log.read_text()
            assert time.time() < deadline, "no third checkpoint in time:\n" + log.read_text()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    saved = _checkpoint_step(spec.checkpoint_dir)
    logged = [int(line.split()[1].rstrip(":")) for line in log.read_text().splitlines()
              if line.startswith("step ")]
    assert 60 <= saved < 400 and saved % 20 == 0
    # At most one checkpoint interval of the killed run's progress is lost.
    assert max(logged) - saved <= 20

    second = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    schedule = optimization.WarmupPolynomialDecay(1e-3, decay_steps=400, warmup_steps=30)
    resumed = [line for line in second.stdout.splitlines() if "resumed from" in line]
    assert resumed and f"ckpt-{saved} at step {saved} " in resumed[0]
    rate = float(resumed[0].rsplit("learning rate ", 1)[1].rstrip(")"))
    assert rate == pytest.approx(float(schedule(saved)), rel=1e-3)
    metrics = json.loads(open(spec.metrics_path).read())
    assert metrics["steps"] == 400 and metrics["start_step"] == saved
    assert metrics["trained_steps"] == 400 - saved
    assert _checkpoint_step(spec.checkpoint_dir) == 400
    print(f"killed at logged step {max(logged)} with checkpoint {saved}; resumed at {saved} "
          f"(learning rate {rate:.3e}); final step {metrics['steps']}")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_multi_worker_mirrored_end_identical(original, tmp_path):
    spec = _spec(original, tmp_path / "run", eval_pattern=original["train"])
    cmd = [sys.executable, "-m", "components.pretrain"] + _argv(spec) + ["--strategy", "multi_worker"]
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers},
                                "task": {"type": "worker", "index": index}})
        log = open(tmp_path / f"worker{index}.log", "w")
        procs.append((subprocess.Popen(cmd, cwd=REPO, env=_env(TF_CONFIG=tf_config), stdout=log,
                                       stderr=subprocess.STDOUT), log))
    try:
        for proc, log in procs:
            assert proc.wait(timeout=400) == 0, (tmp_path / "worker0.log").read_text()[-3000:] + (
                tmp_path / "worker1.log").read_text()[-3000:]
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
            log.close()
    chief = json.loads(open(spec.metrics_path).read())
    other = json.loads((tmp_path / "run" / "workers" / "worker_1" / pretrain.METRICS_FILE).read_text())
    assert chief["num_replicas"] == other["num_replicas"] == 2
    assert chief["steps"] == other["steps"] == 20
    assert chief["weights_sha256"] == other["weights_sha256"]
    # Metrics are aggregated over both workers, so both report the same values.
    assert chief["eval"] == other["eval"] and chief["train"] == other["train"]
    loaded = checkpoints.load_pretrained(spec.export_dir)
    assert pretrain.weights_digest(loaded.model) == chief["weights_sha256"]
    assert sorted(os.listdir(spec.checkpoint_dir)) == [
        "checkpoint", "ckpt-10.data-00000-of-00001", "ckpt-10.index",
        "ckpt-20.data-00000-of-00001", "ckpt-20.index"]


JAX_SCRIPT = r"""
import json, os
os.environ["KERAS_BACKEND"] = "jax"
import keras, numpy as np
from keras_bert import checkpoints, optimization
from keras_bert.config import BertConfig
assert keras.backend.backend() == "jax"
config = BertConfig.preset("tiny", vocab_size=40, hidden_size=32, num_attention_heads=2,
                           intermediate_size=64, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
keras.utils.set_random_seed(0)
model = checkpoints.build_model(config, "pretraining")
model.compile(optimizer=optimization.create_optimizer(
    "adamw", 3e-3, num_train_steps=60, num_warmup_steps=5, gradient_accumulation_steps=2))
rng = np.random.default_rng(0)
n, seq, preds = 32, 16, 3
ids = rng.integers(5, 40, (n, seq)).astype("int32")
positions = np.stack([rng.choice(np.arange(1, seq), preds, replace=False) for _ in range(n)]).astype("int32")
labels = np.take_along_axis(ids, positions, 1)
masked = ids.copy()
np.put_along_axis(masked, positions, 4, 1)  # [MASK]
nsp = (ids[:, 0] % 2).astype("int32")[:, None]
x = {"input_ids": masked, "segment_ids": np.zeros_like(ids), "input_mask": np.ones_like(ids),
     "masked_lm_positions": positions}
y = {"masked_lm_ids": labels, "masked_lm_weights": np.ones((n, preds), "float32"),
     "next_sentence_labels": nsp}
history = model.fit(x, y, batch_size=8, epochs=15, verbose=0).history
print(json.dumps({"loss": history["loss"], "iterations": int(model.optimizer.iterations)}))
"""


@pytest.mark.slow
def test_training_step_on_jax_backend():
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT], cwd=REPO,
                          env=_env(KERAS_BACKEND="jax"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    losses = result["loss"]
    assert result["iterations"] == 15 * 4 // 2  # 4 batches per epoch, 2 per update
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0]
