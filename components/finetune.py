"""Finetune: a pre-trained BERT → a task model with `model.fit`, the best dev checkpoint kept.

Tasks (`--task`): `classification` (one text), `pair` (two texts), `regression` (one or
two texts, float target), `ner` (CoNLL-2003 or JSONL words/tags), `squad1`, `squad2`.
The input is TaskData's output (`--task_data_dir`, `components.task_records`): the
train records stream through `tf.data` (TFRecordDataset → shuffle within
`--shuffle_buffer` records → batch → parse), so a task file larger than memory
trains; dev and test records are predicted in file order and mapped back to text
with the sidecar TaskData writes beside them. Raw files (`--train`, `--dev`,
`--test`, with `components.task_files`' formats and column flags) are first
converted by the TaskData job itself, on the DirectRunner, into a temporary folder
under `--output`. Bad records are counted by TaskData and reported with their
location in `metrics.json`.

Training: the encoder is loaded from `--init_checkpoint` with `checkpoints.load_pretrained`
(a Hugging Face, original TF1 or our own folder; a task head it lacks starts fresh),
then `model.fit` with the usual recipe: bias-corrected AdamW (`--optimizer adamw`, as
`torch.optim.AdamW` and Hugging Face; `adam_weight_decay` is the original's
optimizer without bias correction, which over a short fine-tuning run takes 2-6x
larger steps than the learning rate says), weight decay 0.01 (not on LayerNorm and
biases), gradients clipped to norm 1, linear warm-up over `--warmup_proportion` of
the steps and linear decay to 0,
under the `tf.distribute` strategy named by `--strategy`. After every epoch the dev set
is predicted and scored with the task's metric (`--metric`); the best epoch's weights
are kept in memory and written to `OUTPUT/best/` (`save_pretrained(format="keras")`,
with `vocab.txt` and `labels.txt`), and training stops early after
`--early_stopping_patience` epochs without improvement (0 = never).

Outputs (under `--output`), from the best epoch:

- `best/`: the checkpoint (`load_pretrained("OUTPUT/best")` rebuilds the task model);
- `labels.txt`: label vocabulary (classification, pair, ner), line number = id;
- `predictions.jsonl` (classification/pair/regression/ner): one line per dev example
  with the gold label and the predicted one; class probabilities by label name; for
  NER the predicted tags and entity spans with character offsets in the original
  text (the words joined by single spaces), `text[start:end] == entity text`;
- `predictions.json`, `nbest_predictions.json` (SQuAD): answers by question id, and
  the n-best list with probabilities, logits and character offsets in the context;
  for SQuAD 2.0 also `null_odds.json` (null score minus best non-null score, the
  `--na-prob-file` of the official script) and answers thresholded at the null-score
  threshold tuned on dev (`squad_v2_tune`), which `metrics.json` records;
- `metrics.json`: dev metrics of the best epoch, a trivial baseline on the same dev
  set (majority class, mean value, all `O`, no answer), per-epoch history, bad
  records, example counts, the load report and the spec;
- with `--test` (or a test split in `--task_data_dir`): the test split scored once
  with the best epoch's weights (SQuAD 2.0 at dev's null threshold): `test` and
  `test_baseline` in `metrics.json`, and the same prediction files prefixed `test_`.

Example:
    python -m components.finetune --task pair --train MRPC/train.tsv --dev MRPC/dev.tsv \\
        --text_column "#1 String" --text_b_column "#2 String" --label_column Quality \\
        --init_checkpoint uncased_L-12_H-768_A-12 --output out/mrpc --epochs 3 \\
        --learning_rate 2e-5
    python -m components.finetune --task pair --task_data_dir out/mrpc_task_data \\
        --init_checkpoint uncased_L-12_H-768_A-12 --output out/mrpc --epochs 3 \\
        --learning_rate 2e-5
"""

import argparse
import collections
import dataclasses
import json
import logging
import math
import os
import tempfile
import time
import warnings

import numpy as np

from components import common, task_files, task_records
from components.cli import add_bool_flag
from keras_bert import features as F
from keras_bert import metrics as metrics_lib
from keras_bert import precision
from keras_bert import tasks

STAGE = "finetune"
METRICS_FILE = "metrics.json"
BEST_DIR = "best"
DEFAULT_METRIC = {"classification": "accuracy", "pair": "accuracy", "regression": "pearson",
                  "ner": "f1", "squad1": "f1", "squad2": "f1"}

logger = logging.getLogger(__name__)


class FinetuneError(ValueError):
    """The fine-tuning inputs or options don't fit together."""


@dataclasses.dataclass(frozen=True)
class FinetuneSpec:
    """The Finetune stage; fields are the CLI flags of the same names.

    The input is either TaskData's output folder (`task_data_dir`) or raw task
    files (`train`, `dev`, optional `test`), which `run` converts with TaskData
    first; `max_query_length`, `doc_stride`, `labels` and `read` are used by that
    conversion only.

    Attributes:
        task: one of `keras_bert.tasks.TASKS`.
        init_checkpoint: pre-trained checkpoint folder (HF, original TF1 or ours).
        output_dir: where `best/`, predictions and `metrics.json` go.
        train: raw train file. Defaults to None.
        dev: raw dev file (model selection, predictions, metrics). Defaults to None.
        test: raw test file, scored once with the best dev epoch's weights (SQuAD 2.0
            with dev's null threshold); None for none. Defaults to None.
        task_data_dir: TaskData's output folder (records, sidecars, labels,
            statistics) instead of raw files; its test split, if any, is scored as
            `test` is. Defaults to None.
        max_seq_length: tokens per sequence (must be the records'). Defaults to 128.
        max_query_length: SQuAD question tokens kept. Defaults to 64.
        doc_stride: tokens between window starts (SQuAD, long NER sentences).
            Defaults to 128.
        batch_size: global training batch size. Defaults to 32.
        eval_batch_size: prediction batch size. Defaults to 64.
        epochs: training epochs. Defaults to 3.
        learning_rate: peak learning rate. Defaults to 5e-5.
        warmup_proportion: share of the steps with linear warm-up. Defaults to 0.1.
        weight_decay_rate: AdamW decay rate. Defaults to 0.01.
        optimizer: a `keras_bert.optimization.OPTIMIZERS` name. Defaults to "adamw"
            (bias-corrected, as Hugging Face).
        dropout: dropout before the classifier; None keeps the encoder's. Defaults to None.
        mixed_precision: a `keras_bert.precision.CHOICES` value: "none", "bfloat16",
            "float16" (with loss scaling) or "auto" (bfloat16 where the CPU has
            bfloat16 instructions). Defaults to "none".
        strategy: `keras_bert.distribute` strategy name. Defaults to "default".
        random_seed: seed of initialization, dropout and shuffling. Defaults to 12345.
        early_stopping_patience: epochs without dev improvement before stopping;
            0 never stops early. Defaults to 0.
        metric: dev metric for model selection (a key of the task's metrics).
            Defaults to the task's (`DEFAULT_METRIC`).
        n_best_size: SQuAD n-best answers kept. Defaults to 20.
        max_answer_length: longest SQuAD answer in tokens. Defaults to 30.
        labels: the label set (classification/pair/ner); None takes the train
            split's. Defaults to None.
        read: `components.task_files.ReadOptions`. Defaults to ReadOptions().
        shuffle_buffer: training records in the shuffle window (all of them when
            there are fewer). Defaults to 100000.
        group_by_length: sort windows of this many training batches by length, so
            that trimmed batches hold little padding
            (`keras_bert.data.length_grouped_batches`); 0: batches of mixed lengths.
            Defaults to 0.
        steps_per_execution: batches per compiled call. Defaults to 1.
        jit_compile: compile the train step with XLA. Defaults to False.
        verbose: Keras progress output (0, 1 or 2). Defaults to 2.
    """

    task: str
    init_checkpoint: str
    output_dir: str
    train: str = None
    dev: str = None
    test: str = None
    task_data_dir: str = None
    max_seq_length: int = 128
    max_query_length: int = 64
    doc_stride: int = 128
    batch_size: int = 32
    eval_batch_size: int = 64
    epochs: int = 3
    learning_rate: float = 5e-5
    warmup_proportion: float = 0.1
    weight_decay_rate: float = 0.01
    optimizer: str = "adamw"
    dropout: float = None
    mixed_precision: str = "none"
    strategy: str = "default"
    random_seed: int = 12345
    early_stopping_patience: int = 0
    metric: str = None
    n_best_size: int = 20
    max_answer_length: int = 30
    labels: tuple = None
    read: task_files.ReadOptions = task_files.ReadOptions()
    shuffle_buffer: int = 100_000
    group_by_length: int = 0
    steps_per_execution: int = 1
    jit_compile: bool = False
    verbose: int = 2

    def __post_init__(self):
        if self.task not in tasks.TASKS:
            raise FinetuneError(f"task must be one of {', '.join(tasks.TASKS)}; "
                                f"got {self.task!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise FinetuneError("epochs and batch_size must be >= 1")
        if not 0.0 <= self.warmup_proportion < 1.0:
            raise FinetuneError(f"warmup_proportion must be in [0, 1); got {self.warmup_proportion}")
        if self.task_data_dir and (self.train or self.dev or self.test):
            raise FinetuneError("give either task_data_dir (TaskData's records) or raw "
                                "train/dev/test files, not both")
        if not self.task_data_dir and not (self.train and self.dev):
            raise FinetuneError("need task_data_dir (TaskData's records) or raw train and dev "
                                "files")
        if self.shuffle_buffer < 1:
            raise FinetuneError(f"shuffle_buffer must be >= 1; got {self.shuffle_buffer}")
        if self.group_by_length < 0:
            raise FinetuneError(f"group_by_length must be >= 0; got {self.group_by_length}")
        if self.early_stopping_patience < 0:
            raise FinetuneError("early_stopping_patience must be >= 0")
        try:
            precision.dtype_policy(self.mixed_precision)
        except ValueError as e:
            raise FinetuneError(str(e)) from None
        from keras_bert.optimization import OPTIMIZERS
        if self.optimizer not in OPTIMIZERS:
            raise FinetuneError(f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")

    @property
    def selection_metric(self):
        return self.metric or DEFAULT_METRIC[self.task]


# --------------------------------------------------------------------------------------
# Task families: sidecar → examples, predictions → metrics and records.


def _masked_token_loss(y_true, y_pred):
    """Token cross-entropy averaged over labelled positions (label != -100)."""
    from keras import ops
    import keras

    labels = ops.cast(y_true, "int32")
    mask = ops.cast(ops.not_equal(labels, tasks.IGNORE_LABEL), "float32")
    safe = ops.where(ops.equal(labels, tasks.IGNORE_LABEL), 0, labels)
    per_token = keras.losses.sparse_categorical_crossentropy(safe, y_pred, from_logits=True)
    return ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0)


class _TextTask:
    """classification, pair, regression."""

    def __init__(self, spec):
        self.spec = spec
        self.regression = spec.task == "regression"
        self.labels = None

    @property
    def heads(self):
        """The task's model head, from the task registry."""
        return tasks.TASKS[self.spec.task].head

    def head_kwargs(self):
        return {"num_classes": 1 if self.regression else len(self.labels)}

    def set_labels(self, labels, source):
        self.labels = None if self.regression else list(labels or [])
        if self.labels is not None and len(self.labels) < 2:
            raise FinetuneError(f"{source}: classification needs at least 2 labels; "
                                f"found {self.labels}")

    def _gold(self, examples):
        if self.regression:
            return np.asarray([[float(e.label)] for e in examples], np.float32).reshape(-1, 1)
        label_map = {l: i for i, l in enumerate(self.labels)}
        return np.asarray([label_map[e.label] for e in examples], np.int32).reshape(-1)

    def load(self, records, split):
        """The split's examples from its sidecar (prediction and scoring)."""
        examples = [task_records.text_example(m) for m in records.read_sidecar(split)]
        return {"examples": examples, "y": {"logits": self._gold(examples)},
                "num_features": len(examples)}

    def train_targets(self, records):
        """The train split's targets (for the baseline), streamed from its records."""
        return {"y": {"logits": _record_labels(records, "train", self.regression)}}

    def compile_args(self):
        import keras

        if self.regression:
            return {"loss": {"logits": keras.losses.MeanSquaredError()}}
        return {"loss": {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}}

    def evaluate(self, outputs, dev):
        logits = np.asarray(outputs["logits"])
        examples = dev["examples"]
        if self.regression:
            predicted = logits[:, 0].astype(float).tolist()
            gold = [float(e.label) for e in examples]
            metrics = metrics_lib.regression_metrics(gold, predicted)
            records = [{"guid": e.guid, "text": e.text, "text_b": e.text_b, "label": g,
                        "prediction": p} for e, g, p in zip(examples, gold, predicted)]
            return metrics, records
        probs = tasks.softmax(logits)
        predicted = probs.argmax(axis=-1).tolist()
        gold = dev["y"]["logits"].tolist()
        metrics = metrics_lib.classification_metrics(gold, predicted, classes=list(range(len(self.labels))))
        records = [{"guid": e.guid, "text": e.text, "text_b": e.text_b, "label": e.label,
                    "predicted_label": self.labels[p],
                    "probabilities": {l: float(q) for l, q in zip(self.labels, row)}}
                   for e, p, row in zip(examples, predicted, probs)]
        return metrics, records

    def baseline(self, train, dev):
        if self.regression:
            mean = float(np.mean(train["y"]["logits"])) if len(train["y"]["logits"]) else 0.0
            gold = dev["y"]["logits"][:, 0].tolist()
            return {"name": "train mean", "value": mean,
                    "mse": float(np.mean((np.asarray(gold) - mean) ** 2)) if gold else math.nan,
                    "pearson": math.nan}
        majority = collections.Counter(train["y"]["logits"].tolist()).most_common(1)[0][0]
        gold = dev["y"]["logits"].tolist()
        return {"name": "majority class", "label": self.labels[majority],
                **metrics_lib.classification_metrics(gold, [majority] * len(gold),
                                                     classes=list(range(len(self.labels))))}

    def write_predictions(self, records, outputs, output_dir, prefix=""):
        _write_jsonl(records, os.path.join(output_dir, f"{prefix}predictions.jsonl"))


class _TaggingTask:
    """ner."""

    def __init__(self, spec):
        self.spec = spec
        self.labels = None

    @property
    def heads(self):
        """The task's model head, from the task registry."""
        return tasks.TASKS[self.spec.task].head

    def head_kwargs(self):
        return {"num_classes": len(self.labels)}

    def set_labels(self, labels, source):
        self.labels = list(labels or [])
        if "O" not in self.labels:
            raise FinetuneError(f"{source}: the tag set {self.labels} has no 'O'")

    def load(self, records, split):
        """The split's sentences and their windows from its sidecar."""
        examples, windows, first = [], [], 0
        for meta in records.read_sidecar(split):
            example, w = task_records.tagged_example(meta, records.max_seq_length)
            examples.append(example)
            windows.append((first, w))
            first += len(w)
        return {"examples": examples, "windows": windows, "num_features": first}

    def train_targets(self, records):
        return {}

    def compile_args(self):
        return {"loss": {"logits": _masked_token_loss}}

    def predicted_tags(self, outputs, dev):
        logits = np.asarray(outputs["logits"])
        out = []
        for example, (first, windows) in zip(dev["examples"], dev["windows"]):
            word_logits = tasks.merge_window_logits(
                windows, logits[first:first + len(windows)], len(example.words))
            out.append([self.labels[i] for i in word_logits.argmax(axis=-1)])
        return out

    def evaluate(self, outputs, dev):
        predicted = self.predicted_tags(outputs, dev)
        gold = [list(e.tags) for e in dev["examples"]]
        metrics = metrics_lib.entity_scores(gold, predicted)
        metrics["token_accuracy"] = metrics_lib.token_accuracy(gold, predicted)
        records = [{"guid": e.guid, "text": e.text, "words": list(e.words), "tags": list(e.tags),
                    "predicted_tags": p, "entities": tasks.entity_spans(e, p),
                    "gold_entities": tasks.entity_spans(e, e.tags)}
                   for e, p in zip(dev["examples"], predicted)]
        return metrics, records

    def baseline(self, train, dev):
        gold = [list(e.tags) for e in dev["examples"]]
        out = metrics_lib.entity_scores(gold, [["O"] * len(g) for g in gold])
        out.pop("per_type")
        return {"name": "all O", **out}

    def write_predictions(self, records, outputs, output_dir, prefix=""):
        _write_jsonl(records, os.path.join(output_dir, f"{prefix}predictions.jsonl"))


class _SquadTask:
    """squad1, squad2."""

    def __init__(self, spec):
        self.spec = spec
        self.version_2 = spec.task == "squad2"
        self.labels = None

    @property
    def heads(self):
        """The task's model head, from the task registry."""
        return tasks.TASKS[self.spec.task].head

    def head_kwargs(self):
        return {}

    def set_labels(self, labels, source):
        self.labels = None

    def load(self, records, split):
        """The split's questions, windows and context offsets from its sidecar."""
        examples, groups, first = [], [], 0
        for meta in records.read_sidecar(split):
            record, feats, offsets = task_records.squad_example(meta, records.max_seq_length)
            examples.append(record)
            groups.append((first, feats, offsets))
            first += len(feats)
        return {"examples": examples, "groups": groups, "num_features": first}

    def train_targets(self, records):
        return {}

    def compile_args(self):
        import keras

        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        # The original loss: the mean of the start and end cross-entropies.
        return {"loss": {"start_logits": ce, "end_logits": ce},
                "loss_weights": {"start_logits": 0.5, "end_logits": 0.5}}

    def predictions(self, outputs, dev):
        starts, ends = np.asarray(outputs["start_logits"]), np.asarray(outputs["end_logits"])
        out = []
        for record, (first, feats, offsets) in zip(dev["examples"], dev["groups"]):
            n = len(feats)
            out.append(tasks.squad_nbest(
                record.example, feats, starts[first:first + n], ends[first:first + n],
                n_best_size=self.spec.n_best_size, max_answer_length=self.spec.max_answer_length,
                version_2=self.version_2, offsets=offsets))
        return out

    def evaluate(self, outputs, dev, threshold=None):
        """Scores predictions; SQuAD 2.0 tunes the null threshold unless one is given
        (the test split takes dev's)."""
        preds = self.predictions(outputs, dev)
        gold = {r.example.qas_id: list(r.gold_texts) for r in dev["examples"]}
        if not self.version_2:
            answers = {p.qas_id: p.answer() for p in preds}
            metrics = metrics_lib.squad_v1_scores(gold, answers)
            metrics["exact"] = metrics["exact_match"]
            return metrics, {"predictions": preds, "answers": answers}
        best = {p.qas_id: p.best_text for p in preds}
        odds = {p.qas_id: p.null_score_diff for p in preds}
        if threshold is None:
            threshold, answers, metrics = metrics_lib.squad_v2_tune(gold, best, odds)
        else:
            answers = {q: ("" if odds[q] > threshold else best[q]) for q in best}
            metrics = metrics_lib.squad_v2_scores(gold, answers)
        return metrics, {"predictions": preds, "answers": answers, "threshold": threshold}

    def baseline(self, train, dev):
        gold = {r.example.qas_id: list(r.gold_texts) for r in dev["examples"]}
        empty = {qid: "" for qid in gold}
        if not self.version_2:
            return {"name": "no answer", **metrics_lib.squad_v1_scores(gold, empty)}
        return {"name": "no answer", **metrics_lib.squad_v2_scores(gold, empty)}

    def write_predictions(self, records, outputs, output_dir, prefix=""):
        _write_json(records["answers"], os.path.join(output_dir, f"{prefix}predictions.json"))
        _write_json({p.qas_id: p.nbest for p in records["predictions"]},
                    os.path.join(output_dir, f"{prefix}nbest_predictions.json"))
        if self.version_2:
            _write_json({p.qas_id: p.null_score_diff for p in records["predictions"]},
                        os.path.join(output_dir, f"{prefix}null_odds.json"))


def make_task(spec):
    """The task family object of `spec.task`."""
    if spec.task in ("classification", "pair", "regression"):
        return _TextTask(spec)
    if spec.task == "ner":
        return _TaggingTask(spec)
    return _SquadTask(spec)


# --------------------------------------------------------------------------------------
# Files.


def _clean(value):
    """JSON-safe copy: NaN → None, ±inf → ±1e308, numpy scalars → Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return math.copysign(1e308, value)
        return value
    if isinstance(value, np.integer):
        return int(value)
    return value


def _write_json(value, path):
    with common.atomic_write(path) as f:
        json.dump(_clean(value), f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")


def _write_jsonl(records, path):
    with common.atomic_write(path) as f:
        for record in records:
            f.write(json.dumps(_clean(record), ensure_ascii=False, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------
# Training.


class Predictor:
    """`model.predict(dataset)` for dev and test, with one trace of the model.

    Keras' predict function is a `tf.function` with `reduce_retracing`, called batch
    by batch: it traces the inference graph for the first batch's shape, again for a
    shape that covers the second, and again when the last batch is smaller. Trimmed
    batches change length, so every fine-tuning run paid three traces. This traces
    once, for the dataset's element spec (batch and length unknown), and reuses that
    graph for every epoch's dev predictions and the test split. The outputs are those
    of `model.predict`: NumPy arrays, batches concatenated in order.

    Under a strategy with several replicas it calls `model.predict`, which splits each
    batch across them.
    """

    def __init__(self, model, strategy):
        self.model = model
        self.strategy = strategy
        self._functions = {}

    def __call__(self, dataset):
        import tensorflow as tf

        if self.strategy.num_replicas_in_sync > 1:
            return self.model.predict(dataset, verbose=0)
        key = repr(dataset.element_spec)
        if key not in self._functions:
            self._functions[key] = tf.function(lambda x: self.model(x, training=False),
                                               input_signature=[dataset.element_spec])
        function = self._functions[key]
        batches = [tf.nest.map_structure(np.asarray, function(x)) for x in dataset]
        if not batches:  # as `model.predict` does for an empty dataset
            return self.model.predict(dataset, verbose=0)
        return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *batches)


def make_dev_callback(task, dev, spec, on_best, predict):
    """A `keras.callbacks.Callback` that predicts dev after each epoch.

    It adds `dev_<metric>` for every numeric dev metric to the epoch logs, calls
    `on_best(epoch, metrics, records, outputs)` when the selection metric improves,
    and sets `model.stop_training` after `spec.early_stopping_patience` epochs
    without improvement. `predict(dataset)` gives the outputs (a `Predictor`).
    """
    import keras

    name = spec.selection_metric

    class _DevCallback(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = None
            self.best_epoch = None
            self.waited = 0
            self.history = []

        def on_epoch_end(self, epoch, logs=None):
            started = time.time()
            outputs = predict(dev["x"])
            metrics, records = task.evaluate(outputs, dev)
            if name not in metrics:
                raise FinetuneError(f"metric {name!r} is not one of {sorted(metrics)}")
            value = metrics[name]
            logs = logs if logs is not None else {}
            for key, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    logs[f"dev_{key}"] = v
            entry = {"epoch": epoch + 1, "loss": float(logs.get("loss", math.nan)),
                     f"dev_{name}": value, "eval_seconds": time.time() - started}
            self.history.append(entry)
            improved = value is not None and not math.isnan(value) and (
                self.best is None or value > self.best)
            common.log_stage(STAGE, f"epoch {epoch + 1}: loss {entry['loss']:.4f} dev {name} {value:.4f}"
                  f"{' (best)' if improved else ''}")
            if improved:
                self.best, self.best_epoch, self.waited = value, epoch + 1, 0
                on_best(epoch + 1, metrics, records, outputs)
            else:
                self.waited += 1
                if spec.early_stopping_patience and self.waited >= spec.early_stopping_patience:
                    common.log_stage(STAGE, f"early stopping: no dev {name} gain in {self.waited} epoch(s)")
                    self.model.stop_training = True

    return _DevCallback()


def _record_labels(records, split, regression):
    """The `label_ids` of a split's records, streamed: (N,) int32 or (N, 1) float32."""
    import tensorflow as tf

    dtype = tf.float32 if regression else tf.int64
    spec = {F.LABEL_IDS: tf.io.FixedLenFeature([1], dtype)}
    ds = tf.data.TFRecordDataset(records.records_path(split)).batch(4096).map(
        lambda s: tf.io.parse_example(s, spec)[F.LABEL_IDS])
    parts = [batch.numpy() for batch in ds]
    values = np.concatenate(parts) if parts else np.zeros((0, 1))
    if regression:
        return values.astype(np.float32).reshape(-1, 1)
    return values.astype(np.int32).reshape(-1)


def convert_task_files(spec, output_dir, pipeline_args=None):
    """Runs TaskData on `spec`'s raw train/dev/test files into `output_dir`.

    The same Beam job as the pipeline's TaskData stage (on the DirectRunner unless
    `pipeline_args` say otherwise), with the vocabulary and casing of `spec.init_checkpoint`.

    Returns:
        TaskData's statistics dict.
    """
    from components import task_data
    from keras_bert import checkpoints

    vocab = os.path.join(spec.init_checkpoint, "vocab.txt")
    if not os.path.exists(vocab):
        raise FinetuneError(f"{spec.init_checkpoint}: no vocab.txt beside the checkpoint")
    config, _, _ = checkpoints.read_config(spec.init_checkpoint)
    common.log_stage(STAGE, f"converting the task files with TaskData -> {output_dir}")
    return task_data.run(task_data.TaskDataSpec(
        task=spec.task, train=spec.train, dev=spec.dev, test=spec.test, vocab_path=vocab,
        output_dir=output_dir, do_lower_case=config.do_lower_case,
        max_seq_length=spec.max_seq_length, max_query_length=spec.max_query_length,
        doc_stride=spec.doc_stride, labels=spec.labels, read=spec.read), pipeline_args)


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _check_records(spec, records):
    """The records must be of this task, length and label set, with train and dev."""
    if records.task != spec.task:
        raise FinetuneError(f"{records.folder}: TaskData records are for task {records.task!r}, "
                            f"not {spec.task!r}")
    if records.max_seq_length != spec.max_seq_length:
        raise FinetuneError(f"{records.folder}: records have max_seq_length="
                            f"{records.max_seq_length}; pass --max_seq_length "
                            f"{records.max_seq_length} (got {spec.max_seq_length})")
    if spec.labels is not None and records.labels is not None \
            and list(spec.labels) != list(records.labels):
        raise FinetuneError(f"{records.folder}: labels {records.labels} differ from the given "
                            f"labels {list(spec.labels)}")
    for split in ("train", "dev"):
        if not records.has_split(split) or not records.num_records(split):
            raise FinetuneError(
                f"{records.folder}: no usable {split} records "
                f"({records.stats.get('bad_records_total', 0)} bad record(s), e.g. "
                f"{(records.bad_records() or ['-'])[0]})")


def _check_tokenizer(spec, records, pretrained):
    """The records must be tokenised with the model's vocabulary (and casing)."""
    vocab = records.spec.get("vocab_path")
    if vocab and os.path.exists(vocab) and pretrained.vocab_path:
        if _read_bytes(vocab) != _read_bytes(pretrained.vocab_path):
            raise FinetuneError(f"{records.folder}: the records were tokenised with {vocab}, "
                                f"which is not the vocabulary of {spec.init_checkpoint}")
    elif vocab:
        logger.warning("%s: can't compare the records' vocabulary %s with the model's",
                       records.folder, vocab)
    if bool(records.spec.get("do_lower_case")) != bool(pretrained.config.do_lower_case):
        logger.warning("%s: records made with do_lower_case=%s, the model says %s; training on "
                       "the records", records.folder, records.spec.get("do_lower_case"),
                       pretrained.config.do_lower_case)


def run(spec):
    """Fine-tunes, keeps the best dev checkpoint, writes predictions and metrics.

    Training and prediction read TaskData's records (`spec.task_data_dir`); raw task
    files (`spec.train`, `spec.dev`, `spec.test`) are first converted by TaskData into
    a temporary folder (`convert_task_files`).

    Args:
        spec: a `FinetuneSpec`.

    Returns:
        The dict written to `metrics.json`.

    Example:
        >>> result = run(FinetuneSpec(task="classification", task_data_dir="out/task_data",
        ...                           init_checkpoint="bert/", output_dir="out/finetune"))
        >>> result["dev"]["accuracy"], result["baseline"]["accuracy"]
    """
    if spec.task_data_dir:
        return _run(spec, spec.task_data_dir)
    os.makedirs(spec.output_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="task_data_", dir=spec.output_dir) as folder:
        convert_task_files(spec, folder)
        return _run(spec, folder)


def _run(spec, folder):
    import keras

    from keras_bert import checkpoints, data, distribute, optimization, training

    started = time.time()
    os.makedirs(spec.output_dir, exist_ok=True)
    keras.utils.set_random_seed(spec.random_seed)
    records = task_records.TaskRecords.open(folder)
    _check_records(spec, records)
    task = make_task(spec)
    task.set_labels(records.labels, folder)

    strategy = distribute.get_strategy(spec.strategy)
    dtype = precision.dtype_policy(spec.mixed_precision)
    head_kwargs = task.head_kwargs()
    if spec.dropout is not None and task.heads != "span_qa":
        head_kwargs["dropout"] = spec.dropout
    with strategy.scope():
        pretrained = checkpoints.load_pretrained(spec.init_checkpoint, heads=task.heads,
                                                 dtype=dtype,
                                                 **head_kwargs)
    model, config = pretrained.model, pretrained.config
    if spec.max_seq_length > config.max_position_embeddings:
        raise FinetuneError(f"max_seq_length {spec.max_seq_length} exceeds the model's "
                            f"max_position_embeddings {config.max_position_embeddings}")
    if pretrained.vocab_path is None:
        raise FinetuneError(f"{spec.init_checkpoint}: no vocab.txt beside the checkpoint")
    _check_tokenizer(spec, records, pretrained)
    common.log_stage(STAGE, f"loaded {pretrained.report.summary()}")

    def predict_input(split):
        return data.task_dataset(records.records_path(split), spec.task, records.max_seq_length,
                                 spec.eval_batch_size, num_records=records.num_records(split),
                                 labels=False)

    dev = task.load(records, "dev")
    dev["x"] = predict_input("dev")
    test = None
    if records.has_split("test") and records.num_records("test"):
        test = task.load(records, "test")
        test["x"] = predict_input("test")
    train_size = records.num_records("train")
    train = {"num_features": train_size, "num_examples": records.num_examples("train"),
             **task.train_targets(records)}
    bad = records.bad_records()
    bad_counts = {k: v for k, v in sorted(records.stats.get("bad_records", {}).items()) if v}
    steps_per_epoch = math.ceil(train_size / spec.batch_size)
    num_train_steps = steps_per_epoch * spec.epochs
    warmup = int(num_train_steps * spec.warmup_proportion)
    common.log_stage(STAGE, f"{spec.task}: {train['num_examples']} train examples "
          f"({train_size} records), {len(dev['examples'])} dev examples "
          f"({dev['num_features']} records), {num_train_steps} steps, {warmup} warm-up; "
          f"{sum(bad_counts.values())} bad record(s); records from {folder}")
    for record in bad[:20]:
        logger.warning("bad record %s", record)

    with strategy.scope():
        optimizer = optimization.create_optimizer(
            spec.optimizer, spec.learning_rate, num_train_steps=max(1, num_train_steps),
            num_warmup_steps=warmup, weight_decay_rate=spec.weight_decay_rate)
        optimizer = precision.loss_scaled(optimizer, spec.mixed_precision)
        model.compile(optimizer=optimizer, steps_per_execution=spec.steps_per_execution,
                      jit_compile=spec.jit_compile, **task.compile_args())
        training.build_optimizer(model)

    best_dir = os.path.join(spec.output_dir, BEST_DIR)
    labels_path = os.path.join(spec.output_dir, task_files.LABELS_FILE)
    if task.labels is not None:
        task_files.write_labels(task.labels, labels_path)
    best = {}

    def on_best(epoch, metrics, predictions, outputs):
        best.update(epoch=epoch, metrics=metrics, records=predictions, outputs=outputs,
                    weights=[np.array(w) for w in model.get_weights()])
        checkpoints.save_pretrained(model, best_dir, format="keras",
                                    vocab_path=pretrained.vocab_path)
        if task.labels is not None:
            task_files.write_labels(task.labels, os.path.join(best_dir, task_files.LABELS_FILE))

    predictor = Predictor(model, strategy)
    callback = make_dev_callback(task, dev, spec, on_best, predictor)
    train_ds = data.task_dataset(records.records_path("train"), spec.task, records.max_seq_length,
                                 spec.batch_size, is_training=True, seed=spec.random_seed,
                                 shuffle_buffer=spec.shuffle_buffer, num_records=train_size,
                                 group_by_length=spec.group_by_length)
    with warnings.catch_warnings():
        # Token and span heads don't use the pooler; Keras warns that it gets no gradient.
        warnings.filterwarnings("ignore", message=r"Gradients do not exist for variables \['pooler")
        history = model.fit(train_ds, epochs=spec.epochs, callbacks=[callback],
                            verbose=spec.verbose, shuffle=False)  # the dataset shuffles itself
    if not best:
        raise FinetuneError(f"dev {spec.selection_metric} was never a number; nothing to keep")
    model.set_weights(best["weights"])
    task.write_predictions(best["records"], best["outputs"], spec.output_dir)
    test_metrics = None
    if test is not None:
        outputs = predictor(test["x"])
        kwargs = {"threshold": best["records"]["threshold"]} if spec.task == "squad2" else {}
        test_metrics, test_records = task.evaluate(outputs, test, **kwargs)
        task.write_predictions(test_records, outputs, spec.output_dir, prefix="test_")
        common.log_stage(STAGE, f"test {spec.selection_metric} {test_metrics[spec.selection_metric]:.4f} "
              f"({len(test['examples'])} examples, best dev epoch's weights)")

    result = {
        "task": spec.task,
        "metric": spec.selection_metric,
        "best_epoch": best["epoch"],
        "best_value": best["metrics"][spec.selection_metric],
        "dev": {k: v for k, v in best["metrics"].items()},
        "baseline": task.baseline(train, dev),
        "history": [dict(h, **{k: float(v[i]) for k, v in history.history.items()
                                if i < len(v) and k.startswith("dev_")})
                    for i, h in enumerate(callback.history)],
        "examples": {"train": train["num_examples"], "dev": len(dev["examples"]),
                     **({"test": len(test["examples"])} if test else {})},
        "features": {"train": train_size, "dev": dev["num_features"],
                     **({"test": test["num_features"]} if test else {})},
        "steps": {"per_epoch": steps_per_epoch, "total": num_train_steps, "warmup": warmup},
        "bad_records": bad_counts,
        "bad_record_locations": bad[:1000],
        "labels": task.labels,
        "init_checkpoint": spec.init_checkpoint,
        "task_data": spec.task_data_dir,
        "load_report": pretrained.report.summary(),
        "optimizer": type(model.optimizer).__name__,  # LossScaleOptimizer under float16
        "checkpoint": best_dir,
        "seconds": time.time() - started,
        "spec": {**dataclasses.asdict(spec), "read": dataclasses.asdict(spec.read)},
    }
    if test_metrics is not None:
        result["test"] = dict(test_metrics)
        result["test_baseline"] = task.baseline(train, test)
    if spec.task == "squad2":
        result["null_score_diff_threshold"] = best["records"]["threshold"]
    _write_json(result, os.path.join(spec.output_dir, METRICS_FILE))
    baseline = result["baseline"].get(spec.selection_metric)
    common.log_stage(STAGE, f"best dev {spec.selection_metric} {result['best_value']:.4f} at epoch "
          f"{result['best_epoch']} (baseline {result['baseline']['name']}: {baseline}) -> {best_dir}")
    return result


def build_parser():
    """The `python -m components.finetune` flag parser (flags named as `FinetuneSpec`'s fields)."""
    from keras_bert import optimization

    d = FinetuneSpec
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--task", required=True, choices=tasks.TASKS)
    parser.add_argument("--train", default=None, help="Raw train file (converted by TaskData).")
    parser.add_argument("--dev", default=None, help="Raw dev file (selection, predictions).")
    parser.add_argument("--test", default=None,
                        help="Raw test file, scored with the best dev epoch's weights.")
    parser.add_argument("--task_data_dir", default=None,
                        help="TaskData's output folder, instead of --train/--dev/--test.")
    parser.add_argument("--init_checkpoint", required=True,
                        help="Pre-trained checkpoint folder.")
    parser.add_argument("--output", required=True, help="Output directory.")
    parser.add_argument("--max_seq_length", type=int, default=d.max_seq_length)
    parser.add_argument("--max_query_length", type=int, default=d.max_query_length)
    parser.add_argument("--doc_stride", type=int, default=d.doc_stride)
    parser.add_argument("--batch_size", type=int, default=d.batch_size)
    parser.add_argument("--eval_batch_size", type=int, default=d.eval_batch_size)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--learning_rate", type=float, default=d.learning_rate)
    parser.add_argument("--warmup_proportion", type=float, default=d.warmup_proportion)
    parser.add_argument("--weight_decay_rate", type=float, default=d.weight_decay_rate)
    parser.add_argument("--optimizer", default=d.optimizer,
                        choices=optimization.OPTIMIZERS,
                        help="adamw: bias-corrected (default, as Hugging Face); "
                             "adam_weight_decay: the original BERT optimizer.")
    parser.add_argument("--dropout", type=float, default=None)
    precision.add_flag(parser, d.mixed_precision)
    parser.add_argument("--strategy", default=d.strategy)
    parser.add_argument("--random_seed", type=int, default=d.random_seed)
    parser.add_argument("--early_stopping_patience", type=int, default=d.early_stopping_patience)
    parser.add_argument("--metric", default=None, help="Dev metric for model selection.")
    parser.add_argument("--n_best_size", type=int, default=d.n_best_size)
    parser.add_argument("--max_answer_length", type=int, default=d.max_answer_length)
    parser.add_argument("--labels", default=None, help="Comma-separated label set.")
    parser.add_argument("--steps_per_execution", type=int, default=d.steps_per_execution)
    add_bool_flag(parser, "jit_compile", d.jit_compile, "Compile the train step with XLA.")
    parser.add_argument("--shuffle_buffer", type=int, default=d.shuffle_buffer)
    parser.add_argument("--group_by_length", type=int, default=d.group_by_length,
                        help="Sort windows of this many training batches by length (0: off).")
    parser.add_argument("--verbose", type=int, default=d.verbose)
    task_files.add_read_arguments(parser)
    return parser


def parse_args(argv=None):
    """Flags → `FinetuneSpec`."""
    args = build_parser().parse_args(argv)
    return FinetuneSpec(
        task=args.task, train=args.train, dev=args.dev, test=args.test,
        task_data_dir=args.task_data_dir, init_checkpoint=args.init_checkpoint,
        output_dir=args.output,
        max_seq_length=args.max_seq_length, max_query_length=args.max_query_length,
        doc_stride=args.doc_stride, batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size, epochs=args.epochs,
        learning_rate=args.learning_rate, warmup_proportion=args.warmup_proportion,
        weight_decay_rate=args.weight_decay_rate, optimizer=args.optimizer, dropout=args.dropout,
        mixed_precision=args.mixed_precision, strategy=args.strategy,
        random_seed=args.random_seed,
        early_stopping_patience=args.early_stopping_patience, metric=args.metric,
        n_best_size=args.n_best_size, max_answer_length=args.max_answer_length,
        labels=tuple(args.labels.split(",")) if args.labels else None,
        read=task_files.read_options_from_args(args), shuffle_buffer=args.shuffle_buffer,
        group_by_length=args.group_by_length, steps_per_execution=args.steps_per_execution,
        jit_compile=args.jit_compile, verbose=args.verbose)


def main(argv=None):
    run(parse_args(argv))


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    main()
