"""Two-phase pre-training: short records first, full-length ones last, one schedule, resume."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from components import pretrain
from keras_bert import optimization
from tests.components.test_pretrain import build_pydoc_corpus

FULL, SHORT = 32, 16


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Real masked-LM records from the same text at two lengths, with one vocabulary."""
    root = tmp_path_factory.mktemp("phases")
    full = build_pydoc_corpus(str(root / "full"), max_seq_length=FULL, max_predictions_per_seq=5)
    short = build_pydoc_corpus(str(root / "short"), max_seq_length=SHORT,
                               max_predictions_per_seq=2)
    assert open(full["vocab"]).read() == open(short["vocab"]).read()
    config = {"vocab_size": full["vocab_size"], "hidden_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (root / "bert_config.json").write_text(json.dumps(config))
    return {"full": full, "short": short, "config": str(root / "bert_config.json")}


def _spec(corpora, output_dir, **overrides):
    values = dict(train_pattern=corpora["full"]["train"], eval_pattern=corpora["full"]["eval"],
                  output_dir=str(output_dir), model=corpora["config"],
                  vocab_path=corpora["full"]["vocab"], batch_size=4, max_seq_length=FULL,
                  max_predictions_per_seq=5, num_train_steps=20, num_warmup_steps=4,
                  learning_rate=1e-3, checkpoint_every=4, keep_checkpoints=10, log_every=5,
                  use_nsp=False, random_seed=3, short_train_pattern=corpora["short"]["train"],
                  short_max_seq_length=SHORT, short_fraction=0.6)
    values.update(overrides)
    return pretrain.PretrainSpec(**values)


@pytest.fixture
def probe(monkeypatch):
    """Records, per optimizer step, the batch width the model trained on and the learning rate.

    The model is the real one; its train step is wrapped to write both into variables
    indexed by the step before the update.
    """
    seen = {}
    build = pretrain.build_model

    def build_with_probe(spec):
        model, config, vocab = build(spec)
        widths = tf.Variable(tf.fill([spec.num_train_steps], -1), trainable=False)
        rates = tf.Variable(tf.fill([spec.num_train_steps], -1.0), trainable=False)
        step_of = model.train_step

        def train_step(data):
            x, _ = data
            optimizer = model.optimizer
            step = tf.cast(optimizer.iterations, tf.int32)
            widths.scatter_nd_update([[step]], [tf.shape(x["input_ids"])[1]])
            rates.scatter_nd_update([[step]], [tf.cast(optimizer.learning_rate, tf.float32)])
            return step_of(data)

        model.train_step = train_step
        seen.update(widths=widths, rates=rates)
        return model, config, vocab

    monkeypatch.setattr(pretrain, "build_model", build_with_probe)
    return lambda: (seen["widths"].numpy().tolist(), seen["rates"].numpy())


def test_phases_from_the_spec(corpora, tmp_path):
    spec = _spec(corpora, tmp_path)
    assert spec.short_steps == 12
    short, full = spec.phases
    assert (short.name, short.max_seq_length, short.max_predictions_per_seq, short.end_step) == (
        "short", SHORT, 2, 12)  # round(0.15 * 16) masks
    assert (full.name, full.max_seq_length, full.max_predictions_per_seq, full.end_step) == (
        "full", FULL, 5, 20)
    # At least one full-length step is left, and no short records means one phase.
    assert _spec(corpora, tmp_path, num_train_steps=3, short_fraction=0.99).short_steps == 2
    assert len(_spec(corpora, tmp_path, short_fraction=0.0).phases) == 1
    single = _spec(corpora, tmp_path, short_train_pattern=None, short_max_seq_length=0)
    assert [p.name for p in single.phases] == ["full"]
    for bad, message in [(dict(short_max_seq_length=FULL), "short_max_seq_length must be in"),
                         (dict(short_max_seq_length=0), "go together"),
                         (dict(short_fraction=1.0), "short_fraction must be in"),
                         (dict(short_max_predictions_per_seq=0), "short_max_predictions_per_seq")]:
        with pytest.raises(ValueError, match=message):
            _spec(corpora, tmp_path, **bad)


def test_cli_flags(corpora, tmp_path):
    spec = _spec(corpora, tmp_path, short_max_predictions_per_seq=3)
    argv = ["--train", spec.train_pattern, "--eval", spec.eval_pattern, "--output",
            spec.output_dir, "--model", spec.model, "--vocab", spec.vocab_path,
            "--batch_size", "4", "--max_seq_length", str(FULL), "--max_predictions_per_seq", "5",
            "--num_train_steps", "20", "--num_warmup_steps", "4", "--learning_rate", "1e-3",
            "--checkpoint_every", "4", "--keep_checkpoints", "10", "--log_every", "5",
            "--nouse_nsp", "--random_seed", "3", "--short_train", spec.short_train_pattern,
            "--short_max_seq_length", str(SHORT), "--short_max_predictions_per_seq", "3",
            "--short_fraction", "0.6"]
    assert pretrain.parse_args(argv) == spec


def test_record_widths_are_checked(corpora, tmp_path):
    # The full-length records given as the short ones: a clear error before training.
    spec = _spec(corpora, tmp_path, short_train_pattern=corpora["full"]["train"])
    with pytest.raises(ValueError, match=r"train-0\.tfrecord: the first record's input_ids "
                                         r"has 32 values, expected 16"):
        pretrain.run(spec)


def test_switches_at_the_step_on_one_schedule_and_resumes_in_phase_two(corpora, tmp_path, probe,
                                                                        capsys):
    spec = _spec(corpora, tmp_path / "run")
    metrics = pretrain.run(spec)
    widths, rates = probe()
    # Steps 0..11 on the 16-token records, 12..19 on the 32-token ones.
    assert widths == [SHORT] * 12 + [FULL] * 8
    # One warm-up and one decay over all 20 steps, through the switch.
    schedule = optimization.WarmupPolynomialDecay(1e-3, decay_steps=20, warmup_steps=4)
    np.testing.assert_allclose(rates, [float(schedule(step)) for step in range(20)], rtol=1e-5)
    assert [(p["name"], p["start_step"], p["steps"], p["max_seq_length"])
            for p in metrics["phases"]] == [("short", 0, 12, SHORT), ("full", 12, 8, FULL)]
    assert metrics["steps"] == 20 and np.isfinite(metrics["eval"]["mlm_loss"])
    out = capsys.readouterr().out
    assert "phase 1/2 (short, seq 16): steps 0..12" in out
    assert "phase 2/2 (full, seq 32): steps 12..20" in out
    assert "[phase 2/2 (full, seq 32)]" in out  # the progress lines say which phase runs
    # A checkpoint is taken at the switch, and every 4 steps.
    steps = sorted(int(p.rsplit("-", 1)[1])
                   for p in tf.train.get_checkpoint_state(spec.checkpoint_dir).all_model_checkpoint_paths)
    assert steps == [4, 8, 12, 16, 20]

    # As if killed after the checkpoint of step 16 was written (phase 2): resuming
    # trains steps 16..19 on the full-length records only, at the schedule's rates.
    latest = os.path.join(spec.checkpoint_dir, "ckpt-16")
    tf.compat.v1.train.update_checkpoint_state(spec.checkpoint_dir, latest, [latest])
    resumed = pretrain.run(spec)
    widths, rates = probe()
    assert widths == [-1] * 16 + [FULL] * 4
    np.testing.assert_allclose(rates[16:], [float(schedule(s)) for s in range(16, 20)], rtol=1e-5)
    assert resumed["start_step"] == 16 and resumed["steps"] == 20
    assert [(p["name"], p["start_step"], p["steps"]) for p in resumed["phases"]] == [
        ("full", 16, 4)]
    out = capsys.readouterr().out
    assert "phase 1/2" not in out and "phase 2/2 (full, seq 32): steps 16..20" in out

    # Resumed at the switch: phase 2's input order depends on where it starts, not on
    # how the run got there, so the weights end as the uninterrupted run's did.
    latest = os.path.join(spec.checkpoint_dir, "ckpt-12")
    tf.compat.v1.train.update_checkpoint_state(spec.checkpoint_dir, latest, [latest])
    at_switch = pretrain.run(spec)
    assert at_switch["start_step"] == 12
    assert at_switch["weights_sha256"] == metrics["weights_sha256"]

    # Killed in phase 1 (checkpoint 8): the rest of phase 1, then phase 2.
    latest = os.path.join(spec.checkpoint_dir, "ckpt-8")
    tf.compat.v1.train.update_checkpoint_state(spec.checkpoint_dir, latest, [latest])
    again = pretrain.run(spec)
    widths, _ = probe()
    assert widths == [-1] * 8 + [SHORT] * 4 + [FULL] * 8
    assert [(p["name"], p["start_step"], p["steps"]) for p in again["phases"]] == [
        ("short", 8, 4), ("full", 12, 8)]

