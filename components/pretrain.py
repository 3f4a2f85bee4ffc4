"""Pretrain: masked-LM (+ next-sentence) pre-training with Keras `model.fit`.

Reads TFRecords in the original BERT format (`components.pretraining_data`, or
google-research/bert's `create_pretraining_data.py`), trains a
`BertPretrainingModel` under a `tf.distribute` strategy with the original optimizer
(or LAMB) and schedule, checkpoints every `--checkpoint_every` steps and resumes from
the last checkpoint when started again with the same command (step counter,
optimizer moments and learning-rate position included; after a kill at most one
checkpoint interval is redone). At the end it evaluates on `--eval`, and the chief
writes:

    OUTPUT/export/                 encoder + pre-training heads, `save_pretrained`
                                   format "keras" (+ vocab.txt when given)
    OUTPUT/pretrain_metrics.json   final train/eval MLM loss and accuracy, NSP
                                   accuracy, steps, sequences/s
    OUTPUT/checkpoints/            ckpt-<step> (model + optimizer)
    OUTPUT/logs/                   TensorBoard: loss, learning rate, sequences/s

A resumed run reads the input with a different shuffle seed (derived from `--random_seed`
and the resume step) instead of replaying the interrupted order, as the original's
estimator did on restart.

Two phases (the original paper's recipe): with `--short_train` (records written at
`--short_max_seq_length`, e.g. 64 where `--max_seq_length` is 128), the first
`--short_fraction` of the steps (90% by default) train on the short records, which
cost about half as much per step, and the rest on the full-length `--train` records,
so that the position embeddings beyond the short length are learnt too. It is one
run: one optimizer, one warm-up and one learning-rate schedule over all
`--num_train_steps`, the model unchanged (its position embeddings cover
`max_position_embeddings` either way). A checkpoint is taken at the switch, and a
resumed run continues in the phase its checkpoint's step falls in. Evaluation reads
`--eval` at the full length.

Exit codes: 0 done, 3 training diverged (NaN/inf loss; the last good checkpoint is
kept and named in the message).

Example:
    python -m components.pretrain --train 'data/pretraining-*.tfrecord' \\
        --eval 'heldout/*.tfrecord' --model tiny --vocab vocab.txt --output out/pretrain \\
        --batch_size 64 --num_train_steps 10000 --num_warmup_steps 1000 \\
        --learning_rate 1e-3 --mixed_precision bfloat16

    # 90% of the steps on records of 64 tokens, then 10% on the 128-token ones:
    python -m components.pretrain --train 'data128/*.tfrecord' \\
        --short_train 'data64/*.tfrecord' --short_max_seq_length 64 \\
        --short_max_predictions_per_seq 10 --short_fraction 0.9 ...
"""

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time

import keras
import numpy as np

from components import common
from components.cli import add_bool_flag
from keras_bert import checkpoints
from keras_bert import data as data_lib
from keras_bert import distribute
from keras_bert import features
from keras_bert import masking
from keras_bert import optimization
from keras_bert import precision
from keras_bert import training
from keras_bert.config import PRESETS, resolve_config
from keras_bert.tokenizer import load_vocab

STAGE = "pretrain"
METRICS_FILE = "pretrain_metrics.json"
SPEC_FILE = "pretrain_spec.json"
EXPORT_DIR = "export"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
EXIT_DIVERGED = 3

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One stretch of a run on one record set (`PretrainSpec.phases`).

    Attributes:
        name: "short" (the first phase of a two-phase run) or "full".
        train_pattern: its training TFRecords glob.
        max_seq_length: tokens per record.
        max_predictions_per_seq: masked positions per record.
        end_step: the optimizer step it ends at (the next one starts there).
    """

    name: str
    train_pattern: str
    max_seq_length: int
    max_predictions_per_seq: int
    end_step: int


@dataclasses.dataclass(frozen=True)
class PretrainSpec:
    """The Pretrain stage; fields are the CLI flags of the same names.

    Attributes:
        train_pattern: training TFRecords glob (comma-separated allowed).
        output_dir: where checkpoints, export, logs and metrics go.
        eval_pattern: held-out TFRecords glob; None for no evaluation. Defaults to None.
        model: preset name ("tiny", "base", "L4_H256", ...) or a config JSON file;
            with a preset and `vocab_path`, `vocab_size` is taken from the vocabulary.
            Ignored with `init_checkpoint`. Defaults to "base".
        init_checkpoint: checkpoint folder (ours, HF or original) to start from.
            Defaults to None.
        vocab_path: vocab.txt, copied into the export; needed by `dynamic_masking`.
            Defaults to None.
        batch_size: global batch size per batch (per update: times
            `gradient_accumulation_steps`). Defaults to 32.
        max_seq_length: tokens per record. Defaults to 128.
        max_predictions_per_seq: masked positions per record. Defaults to 20.
        num_train_steps: optimizer updates in the whole run. Defaults to 100000.
        num_warmup_steps: linear warm-up updates. Defaults to 10000.
        learning_rate: peak learning rate. Defaults to 1e-4.
        optimizer: "adam_weight_decay" (the original, no bias correction), "adamw"
            (bias-corrected) or "lamb". Defaults to "adam_weight_decay".
        weight_decay_rate: weight decay. Defaults to 0.01.
        mixed_precision: a `keras_bert.precision.CHOICES` value: "none", "bfloat16",
            "float16" (with loss scaling) or "auto" (bfloat16 where the CPU has
            bfloat16 instructions). Defaults to "none".
        jit_compile: compile the train step with XLA. Defaults to False.
        strategy: "default", "mirrored", "multi_worker" (TF_CONFIG) or "tpu".
            Defaults to "default".
        tpu: TPU name for `strategy="tpu"`. Defaults to None.
        checkpoint_every: checkpoint interval in optimizer steps. Defaults to 1000.
        keep_checkpoints: checkpoints kept. Defaults to 3.
        steps_per_epoch: optimizer steps per Keras epoch (progress line, epoch
            metrics). Defaults to `checkpoint_every`.
        gradient_accumulation_steps: batches averaged per update. Defaults to 1.
        use_nsp: train the next-sentence head. Defaults to True.
        dynamic_masking: records are unmasked; mask them anew every epoch (needs
            `vocab_path`). Defaults to False.
        masked_lm_prob: share of tokens masked by dynamic masking. Defaults to 0.15.
        whole_word_mask: dynamic masking masks whole words. Defaults to False.
        eval_steps: evaluation batches; None: one pass (records // batch_size, at
            least 1). Defaults to None.
        log_every: throughput / learning-rate logging interval in steps. Defaults to 100.
        shuffle_buffer: records in the shuffle buffer. Defaults to 1000.
        random_seed: seed of initialization, shuffling and dynamic masks. Defaults to 12345.
        deterministic: read the training files in a fixed turn (the interleave takes
            one record from each open file in turn), so that two runs with the same
            seed, data and machine end with identical weights. False lets the
            interleave take whichever file has a record ready, so that one slow file
            (remote storage) does not hold the others up; the record order, and so
            the weights, then depend on thread timing. Defaults to True.
        group_by_length: sort windows of this many batches by length and trim each
            batch's padding (`keras_bert.data.length_grouped_batches`); 0: every
            batch keeps `max_seq_length` positions. Defaults to 0.
        short_train_pattern: training TFRecords glob of the short first phase,
            written at `short_max_seq_length`; None: one phase on `train_pattern`.
            Defaults to None.
        short_max_seq_length: tokens per record of `short_train_pattern`, at least
            1 and below `max_seq_length`; 0 when there is no short phase. Defaults to 0.
        short_max_predictions_per_seq: masked positions per short record; None:
            `keras_bert.masking.num_to_predict(short_max_seq_length, masked_lm_prob,
            max_predictions_per_seq)`, the masks that a full short record gets
            (10 for 64 tokens at 0.15). Defaults to None.
        short_fraction: share of `num_train_steps` trained on the short records,
            in [0, 1) (`short_steps`: rounded, and at least one step is left for
            the full length). Defaults to 0.9.
    """

    train_pattern: str
    output_dir: str
    eval_pattern: str = None
    model: str = "base"
    init_checkpoint: str = None
    vocab_path: str = None
    batch_size: int = 32
    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    num_train_steps: int = 100000
    num_warmup_steps: int = 10000
    learning_rate: float = 1e-4
    optimizer: str = "adam_weight_decay"
    weight_decay_rate: float = 0.01
    mixed_precision: str = "none"
    jit_compile: bool = False
    strategy: str = "default"
    tpu: str = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    steps_per_epoch: int = None
    gradient_accumulation_steps: int = 1
    use_nsp: bool = True
    dynamic_masking: bool = False
    masked_lm_prob: float = 0.15
    whole_word_mask: bool = False
    eval_steps: int = None
    log_every: int = 100
    shuffle_buffer: int = 1000
    random_seed: int = 12345
    deterministic: bool = True
    group_by_length: int = 0
    short_train_pattern: str = None
    short_max_seq_length: int = 0
    short_max_predictions_per_seq: int = None
    short_fraction: float = 0.9

    def __post_init__(self):
        positive = ("batch_size", "max_seq_length", "max_predictions_per_seq", "num_train_steps",
                    "checkpoint_every", "keep_checkpoints", "gradient_accumulation_steps",
                    "log_every", "shuffle_buffer")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_warmup_steps < 0:
            raise ValueError(f"num_warmup_steps must be >= 0, got {self.num_warmup_steps}")
        if self.group_by_length < 0:
            raise ValueError(f"group_by_length must be >= 0, got {self.group_by_length}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.optimizer not in optimization.OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {optimization.OPTIMIZERS}, "
                             f"got {self.optimizer!r}")
        precision.dtype_policy(self.mixed_precision)  # raises on an unknown value
        if self.strategy not in distribute.STRATEGIES:
            raise ValueError(f"strategy must be one of {distribute.STRATEGIES}, "
                             f"got {self.strategy!r}")
        if self.dynamic_masking and not self.vocab_path:
            raise ValueError("dynamic_masking needs vocab_path (for [MASK] and special ids)")
        if bool(self.short_train_pattern) != bool(self.short_max_seq_length):
            raise ValueError("short_train_pattern and short_max_seq_length go together, got "
                             f"{self.short_train_pattern!r} and {self.short_max_seq_length}")
        if self.short_max_seq_length and not 1 <= self.short_max_seq_length < self.max_seq_length:
            raise ValueError(f"short_max_seq_length must be in [1, max_seq_length "
                             f"{self.max_seq_length}), got {self.short_max_seq_length}")
        if (self.short_max_predictions_per_seq is not None
                and self.short_max_predictions_per_seq < 1):
            raise ValueError(f"short_max_predictions_per_seq must be >= 1, got "
                             f"{self.short_max_predictions_per_seq}")
        if not 0 <= self.short_fraction < 1:
            raise ValueError(f"short_fraction must be in [0, 1), got {self.short_fraction}")

    @property
    def short_steps(self):
        """Optimizer steps of the short phase (0: one phase at `max_seq_length`)."""
        if not self.short_train_pattern:
            return 0
        return min(self.num_train_steps - 1, round(self.short_fraction * self.num_train_steps))

    @property
    def phases(self):
        """The run's `Phase`s in order, each ending at its `end_step`."""
        full = Phase("full", self.train_pattern, self.max_seq_length,
                     self.max_predictions_per_seq, self.num_train_steps)
        if not self.short_steps:
            return [full]
        predictions = self.short_max_predictions_per_seq or masking.num_to_predict(
            self.short_max_seq_length, self.masked_lm_prob, self.max_predictions_per_seq)
        short = Phase("short", self.short_train_pattern, self.short_max_seq_length,
                      predictions, self.short_steps)
        return [short, full]

    @property
    def epoch_steps(self):
        return self.steps_per_epoch or min(self.checkpoint_every, self.num_train_steps)

    @property
    def checkpoint_dir(self):
        return os.path.join(self.output_dir, CHECKPOINT_DIR)

    @property
    def export_dir(self):
        return os.path.join(self.output_dir, EXPORT_DIR)

    @property
    def metrics_path(self):
        return os.path.join(self.output_dir, METRICS_FILE)


Spec = PretrainSpec


def _vocab_size(vocab_path):
    return len(load_vocab(vocab_path))


def resolve_model_config(spec):
    """The `BertConfig` of the run (preset/file, vocab size from the vocabulary)."""
    overrides = {}
    if spec.vocab_path and spec.model.lower() in PRESETS:
        overrides["vocab_size"] = _vocab_size(spec.vocab_path)
    config = resolve_config(spec.model, **overrides)
    if spec.vocab_path and config.vocab_size != _vocab_size(spec.vocab_path):
        raise ValueError(f"{spec.model}: vocab_size {config.vocab_size} does not match "
                         f"{spec.vocab_path} ({_vocab_size(spec.vocab_path)} tokens)")
    if config.max_position_embeddings < spec.max_seq_length:
        raise ValueError(f"max_seq_length {spec.max_seq_length} exceeds the config's "
                         f"max_position_embeddings {config.max_position_embeddings}")
    return config


def data_seed(seed, start_step):
    """Shuffle/masking seed of a run resumed at `start_step` (the seed itself at 0)."""
    if start_step == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{start_step}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def build_model(spec):
    """(model, config, vocab path): built from `init_checkpoint` or the config. Call in scope."""
    heads = "pretraining" if spec.use_nsp else "mlm"
    dtype = precision.dtype_policy(spec.mixed_precision)
    if spec.init_checkpoint:
        loaded = checkpoints.load_pretrained(spec.init_checkpoint, heads=heads, dtype=dtype)
        common.log_stage(STAGE, f"initialized from {loaded.report.summary()}")
        return loaded.model, loaded.config, spec.vocab_path or loaded.vocab_path
    config = resolve_model_config(spec)
    return checkpoints.build_model(config, heads, dtype=dtype), config, spec.vocab_path


def weights_digest(model):
    """sha256 of all trainable weights, in order (equal digests = identical weights)."""
    h = hashlib.sha256()
    for w in model.trainable_weights:
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()


def _dataset(spec, pattern, is_training, seed, masking_fn, max_seq_length=None,
             max_predictions_per_seq=None):
    return data_lib.pretraining_dataset(
        pattern, spec.batch_size, max_seq_length or spec.max_seq_length,
        max_predictions_per_seq or spec.max_predictions_per_seq,
        is_training=is_training, seed=seed, masking_fn=masking_fn,
        shuffle_buffer=spec.shuffle_buffer, repeat=True, drop_remainder=True,
        deterministic=spec.deterministic, group_by_length=spec.group_by_length)


def check_record_widths(pattern, max_seq_length, max_predictions_per_seq, dynamic_masking=False):
    """Raises ValueError unless the first record of `pattern` has the expected widths.

    Records of another length (the short set given as the full one, or the other way
    round) would otherwise fail deep inside the input pipeline.

    Args:
        pattern: TFRecords glob (comma-separated allowed).
        max_seq_length: expected `input_ids` length.
        max_predictions_per_seq: expected `masked_lm_positions` length (not checked
            with `dynamic_masking`: such records have no masks).
        dynamic_masking: the records are unmasked. Defaults to False.
    """
    import tensorflow as tf

    path = data_lib.list_files(pattern)[0]
    expected = {features.INPUT_IDS: max_seq_length}
    if not dynamic_masking:
        expected[features.MASKED_LM_POSITIONS] = max_predictions_per_seq
    for raw in tf.data.TFRecordDataset(path).take(1):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        for name, width in expected.items():
            found = len(feature[name].int64_list.value) if name in feature else None
            if found != width:
                raise ValueError(f"{path}: the first record's {name} has "
                                 f"{'no values' if found is None else f'{found} values'}, "
                                 f"expected {width}")


def run(spec):
    """Trains (or resumes), evaluates, exports; returns the metrics dict.

    Args:
        spec: a `PretrainSpec`.

    Raises:
        training.TrainingDivergedError: the loss became NaN/inf (last good
            checkpoint kept).
    """
    keras.utils.set_random_seed(spec.random_seed)
    strategy = distribute.get_strategy(spec.strategy, tpu=spec.tpu)
    chief = distribute.is_chief(strategy)
    accumulation = spec.gradient_accumulation_steps
    with strategy.scope():
        model, config, vocab_path = build_model(spec)
        optimizer = optimization.create_optimizer(
            spec.optimizer, spec.learning_rate, spec.num_train_steps, spec.num_warmup_steps,
            weight_decay_rate=spec.weight_decay_rate, gradient_accumulation_steps=accumulation)
        optimizer = precision.loss_scaled(optimizer, spec.mixed_precision)
        model.compile(optimizer=optimizer, jit_compile=spec.jit_compile)
        checkpoint = training.PeriodicCheckpoint(
            spec.checkpoint_dir, spec.checkpoint_every, max_to_keep=spec.keep_checkpoints,
            strategy=strategy)
        checkpoint.set_model(model)
        start_step = checkpoint.restore_latest()
        training.work_around_keras_distribute_bugs(model, strategy)
    if start_step:
        common.log_stage(STAGE, f"resumed from {checkpoint.latest_checkpoint} at step {start_step} "
               f"(learning rate {float(training.base_optimizer(model.optimizer).learning_rate):.3e})")
    if chief:
        os.makedirs(spec.output_dir, exist_ok=True)
        with common.atomic_write(os.path.join(spec.output_dir, SPEC_FILE)) as f:
            json.dump(dataclasses.asdict(spec), f, indent=2, sort_keys=True)

    def masking_for(max_predictions_per_seq):
        if not spec.dynamic_masking:
            return None
        return data_lib.dynamic_masking_fn(vocab_path, max_predictions_per_seq,
                                           spec.masked_lm_prob, spec.whole_word_mask)

    global_batch = spec.batch_size
    guard = training.NaNGuard(checkpoint)
    throughput = training.ThroughputLogger(
        global_batch, every_n_steps=min(spec.log_every, spec.num_train_steps),
        log_dir=os.path.join(spec.output_dir, LOG_DIR), write_summaries=chief)
    train_metrics = {}
    train_seconds = 0.0
    phases = spec.phases
    phase_results = []
    if start_step < spec.num_train_steps:
        common.log_stage(STAGE, f"training steps {start_step}..{spec.num_train_steps} "
               f"in {len(phases)} phase(s) ({config.num_hidden_layers} layers, hidden "
               f"{config.hidden_size}, vocab {config.vocab_size}; batch {global_batch} x "
               f"{accumulation} accumulation, {strategy.num_replicas_in_sync} replica(s), "
               f"{spec.optimizer}, precision {precision.resolve(spec.mixed_precision)[0]}, "
               f"jit {spec.jit_compile})")
    begin = 0
    for number, phase in enumerate(phases, start=1):
        phase_begin, begin = max(begin, start_step), phase.end_step
        if phase_begin >= phase.end_step:
            continue  # done before the checkpoint this run resumed from
        check_record_widths(phase.train_pattern, phase.max_seq_length,
                            phase.max_predictions_per_seq, spec.dynamic_masking)
        # The seed depends on where the phase starts, so that a run resumed at the
        # switch reads the full-length records as an uninterrupted run does.
        train_ds = _dataset(spec, phase.train_pattern, True, data_seed(spec.random_seed, phase_begin),
                            masking_for(phase.max_predictions_per_seq), phase.max_seq_length,
                            phase.max_predictions_per_seq)
        label = (f"phase {number}/{len(phases)} ({phase.name}, seq {phase.max_seq_length})"
                 if len(phases) > 1 else "")
        if label:
            common.log_stage(STAGE, f"{label}: steps {phase_begin}..{phase.end_step} on "
                                    f"{phase.train_pattern} ({phase.max_predictions_per_seq} "
                                    f"masked positions per record)")
        else:
            common.log_stage(STAGE, f"steps {phase_begin}..{phase.end_step} on {phase.train_pattern}")
        if phase_results:
            # A fresh train function traces the new, static batch shape (the old one,
            # with reduce_retracing, would fall back to a shape-generic graph).
            model.make_train_function(force=True)
        throughput.tag = label
        epoch_steps = spec.epoch_steps
        initial_epoch = phase_begin // epoch_steps
        # A resumed phase starts mid-epoch; StopAtStep ends it at the exact step.
        epochs = initial_epoch + math.ceil((phase.end_step - phase_begin) / epoch_steps)
        started = time.perf_counter()
        model.fit(
            train_ds, initial_epoch=initial_epoch, epochs=epochs,
            steps_per_epoch=epoch_steps * accumulation, verbose=2, shuffle=False,
            callbacks=[guard, checkpoint, throughput, training.StopAtStep(phase.end_step)])
        seconds = time.perf_counter() - started
        train_seconds += seconds
        guard.raise_if_diverged()
        phase_results.append(dict(dataclasses.asdict(phase), start_step=phase_begin,
                                  steps=training.optimizer_step(model) - phase_begin,
                                  seconds=seconds))
    if phase_results:
        # The metrics hold the last epoch's running totals (at most steps_per_epoch steps).
        train_metrics = training.global_metrics(model)
    final_step = training.optimizer_step(model)

    eval_metrics = {}
    if spec.eval_pattern:
        eval_steps = spec.eval_steps or max(1, data_lib.count_records(spec.eval_pattern)
                                            // spec.batch_size)
        eval_ds = _dataset(spec, spec.eval_pattern, False, spec.random_seed,
                           masking_for(spec.max_predictions_per_seq))
        model.evaluate(eval_ds, steps=eval_steps, verbose=0)
        eval_metrics = training.global_metrics(model)
        eval_metrics["steps"] = eval_steps
        eval_metrics["sequences"] = eval_steps * spec.batch_size

    trained_steps = final_step - start_step
    rate = throughput.sequences_per_second
    if rate is None and train_seconds:
        rate = trained_steps * accumulation * global_batch / train_seconds
    metrics = {
        "history": throughput.history,
        "steps": final_step,
        "start_step": start_step,
        "trained_steps": trained_steps,
        "phases": phase_results,
        "train": train_metrics,
        "eval": eval_metrics,
        "sequences_per_second": rate,
        "train_seconds": train_seconds,
        "global_batch_size": global_batch,
        "gradient_accumulation_steps": accumulation,
        "num_replicas": strategy.num_replicas_in_sync,
        "learning_rate_at_end": float(training.base_optimizer(model.optimizer).learning_rate),
        "last_checkpoint": checkpoint.latest_checkpoint,
        "weights_sha256": weights_digest(model),
        "config": config.to_dict(),
    }
    if chief:
        checkpoints.save_pretrained(model, spec.export_dir, format="keras", vocab_path=vocab_path)
        metrics["export"] = spec.export_dir
        path = spec.metrics_path
    else:
        # Every worker reports its own digest, so identical weights can be checked.
        task_type, task_id = distribute.task_info(strategy)
        path = os.path.join(spec.output_dir, "workers", f"{task_type}_{task_id}", METRICS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with common.atomic_write(path) as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    summary = f"step {final_step}"
    if metrics["train"]:
        summary += (f"; train mlm_loss {metrics['train'].get('mlm_loss', float('nan')):.4f} "
                    f"mlm_accuracy {metrics['train'].get('mlm_accuracy', float('nan')):.4f}")
    if eval_metrics:
        summary += (f"; eval mlm_loss {eval_metrics['mlm_loss']:.4f} "
                    f"mlm_accuracy {eval_metrics['mlm_accuracy']:.4f}")
        if "nsp_accuracy" in eval_metrics:
            summary += f" nsp_accuracy {eval_metrics['nsp_accuracy']:.4f}"
    if rate:
        summary += f"; {rate:.1f} sequences/s"
    common.log_stage(STAGE, summary + f"; wrote {path}")
    return metrics


def build_parser():
    """The `python -m components.pretrain` flag parser (flags named as `PretrainSpec`'s fields)."""
    d = PretrainSpec
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--train", required=True, help="Training TFRecords glob.")
    p.add_argument("--eval", default=None, help="Held-out TFRecords glob.")
    p.add_argument("--output", required=True, help="Output folder.")
    p.add_argument("--model", default=d.model, help="Preset name or config JSON file.")
    p.add_argument("--init_checkpoint", default=None, help="Checkpoint folder to start from.")
    p.add_argument("--vocab", default=None, help="vocab.txt (copied into the export).")
    p.add_argument("--batch_size", type=int, default=d.batch_size)
    p.add_argument("--max_seq_length", type=int, default=d.max_seq_length)
    p.add_argument("--max_predictions_per_seq", type=int, default=d.max_predictions_per_seq)
    p.add_argument("--num_train_steps", type=int, default=d.num_train_steps)
    p.add_argument("--num_warmup_steps", type=int, default=d.num_warmup_steps)
    p.add_argument("--learning_rate", type=float, default=d.learning_rate)
    p.add_argument("--optimizer", choices=optimization.OPTIMIZERS, default=d.optimizer)
    p.add_argument("--weight_decay_rate", type=float, default=d.weight_decay_rate)
    precision.add_flag(p, d.mixed_precision)
    add_bool_flag(p, "jit_compile", d.jit_compile, "Compile the train step with XLA.")
    p.add_argument("--strategy", choices=distribute.STRATEGIES, default=d.strategy)
    p.add_argument("--tpu", default=None)
    p.add_argument("--checkpoint_every", type=int, default=d.checkpoint_every)
    p.add_argument("--keep_checkpoints", type=int, default=d.keep_checkpoints)
    p.add_argument("--steps_per_epoch", type=int, default=None)
    p.add_argument("--gradient_accumulation_steps", type=int, default=d.gradient_accumulation_steps)
    add_bool_flag(p, "use_nsp", d.use_nsp, "Train the next-sentence head.")
    add_bool_flag(p, "dynamic_masking", d.dynamic_masking, "Mask the records anew every epoch.")
    p.add_argument("--masked_lm_prob", type=float, default=d.masked_lm_prob)
    add_bool_flag(p, "whole_word_mask", d.whole_word_mask, "Dynamic masking masks whole words.")
    p.add_argument("--eval_steps", type=int, default=None)
    p.add_argument("--log_every", type=int, default=d.log_every)
    p.add_argument("--shuffle_buffer", type=int, default=d.shuffle_buffer)
    p.add_argument("--random_seed", type=int, default=d.random_seed)
    add_bool_flag(p, "deterministic", d.deterministic,
                  "Read the training files in a fixed turn: same seed, same weights.")
    p.add_argument("--group_by_length", type=int, default=d.group_by_length,
                   help="Sort windows of this many batches by length and trim their "
                        "padding (0: off).")
    p.add_argument("--short_train", default=None,
                   help="Training TFRecords glob of a short first phase (records of "
                        "--short_max_seq_length tokens); unset: one phase on --train.")
    p.add_argument("--short_max_seq_length", type=int, default=d.short_max_seq_length,
                   help="Tokens per --short_train record.")
    p.add_argument("--short_max_predictions_per_seq", type=int, default=None,
                   help="Masked positions per --short_train record (default: the masks "
                        "a full short record gets, round(masked_lm_prob * length)).")
    p.add_argument("--short_fraction", type=float, default=d.short_fraction,
                   help="Share of the steps trained on --short_train, in [0, 1).")
    return p


def parse_args(argv=None):
    """Command-line flags -> `PretrainSpec`."""
    a = build_parser().parse_args(argv)
    return PretrainSpec(
        train_pattern=a.train, eval_pattern=a.eval, output_dir=a.output, model=a.model,
        init_checkpoint=a.init_checkpoint, vocab_path=a.vocab, batch_size=a.batch_size,
        max_seq_length=a.max_seq_length, max_predictions_per_seq=a.max_predictions_per_seq,
        num_train_steps=a.num_train_steps, num_warmup_steps=a.num_warmup_steps,
        learning_rate=a.learning_rate, optimizer=a.optimizer,
        weight_decay_rate=a.weight_decay_rate, mixed_precision=a.mixed_precision,
        jit_compile=a.jit_compile, strategy=a.strategy, tpu=a.tpu,
        checkpoint_every=a.checkpoint_every, keep_checkpoints=a.keep_checkpoints,
        steps_per_epoch=a.steps_per_epoch,
        gradient_accumulation_steps=a.gradient_accumulation_steps, use_nsp=a.use_nsp,
        dynamic_masking=a.dynamic_masking, masked_lm_prob=a.masked_lm_prob,
        whole_word_mask=a.whole_word_mask, eval_steps=a.eval_steps, log_every=a.log_every,
        shuffle_buffer=a.shuffle_buffer, random_seed=a.random_seed,
        deterministic=a.deterministic, group_by_length=a.group_by_length,
        short_train_pattern=a.short_train, short_max_seq_length=a.short_max_seq_length,
        short_max_predictions_per_seq=a.short_max_predictions_per_seq,
        short_fraction=a.short_fraction)


def main(argv=None):
    spec = parse_args(argv)
    try:
        run(spec)
    except training.TrainingDivergedError as e:
        print(f"[{STAGE}] error: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_DIVERGED)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)
    main()
