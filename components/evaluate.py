"""Evaluate stage: score the exported SavedModel on the test split and decide the blessing.

What is evaluated is what is served: the SavedModel written by Export is loaded with
`tf.saved_model.load` and the raw test examples go through its `serving_default`
signature, the same function the model server calls (in-graph tokenizer included).
Nothing here imports the Keras model.

Metrics per task (`keras_bert.tasks.TASKS`):

- `classification`, `pair`: accuracy, macro F1, Matthews correlation, per-class
  precision/recall/F1/support and the confusion matrix (rows: gold label, columns:
  predicted label, in the model's label order);
- `regression`: Pearson and Spearman correlation (`scipy.stats`) and mean squared error;
- `ner`: entity-level precision/recall/F1, micro and per entity type (seqeval's
  default, conlleval rules): a predicted entity is correct when its type and its
  character span `[start, end)` in the sentence equal a gold entity's. The gold
  entities are the gold tags' chunks (`keras_bert.tasks.entity_spans`); the predicted
  ones are the signature's `entity_*` outputs. Every predicted span is checked to be
  the exact characters `text[start:end]` the signature returned as `entity_text`.
  Words beyond `max_seq_length` word pieces get no tag from the served model (one
  window per request), so their gold entities count as missed;
- `squad1`: the official v1.1 exact match and F1 (percent);
- `squad2`: the official v2.0 exact/F1 overall and for HasAns/NoAns questions (the
  SavedModel already applies the null-score threshold that Finetune tuned on dev).

The blessing compares one metric with a trivial baseline scored on the same test split
(`BLESSING`): the majority training label (from TaskData's label counts) for
classification and pair; predicting the training mean for regression (MSE, lower is
better); "no entities" for NER; the first sentence of the context for SQuAD 1.1 (a
reader that does no better than that has not learnt to read the question); "no
answer" for SQuAD 2.0. A model is blessed when it beats the baseline by more than
`bless_margin` (in the metric's own units: a share for accuracy, percent for SQuAD).

Outputs (under `output_dir`): `evaluation.json` (every number, per-class tables and the
confusion matrix), `test_predictions.jsonl` (one line per test example with the
SavedModel's outputs), and `blessing.json` ({"blessed", "model", "metric", ...}), the
artifact Push reads.

Example:
    python -m components.evaluate --export_dir export/bert/1 --task classification \
        --test test.tsv --text_column sentence --labels neg,pos \
        --train_stats task_data/task_data_stats.json --output eval/
"""

import argparse
import collections
import dataclasses
import json
import math
import os
import time

import numpy as np

from components import common, task_files
from keras_bert import metrics as bert_metrics
from keras_bert import tasks

STAGE = "evaluate"
EVALUATION_FILE = "evaluation.json"
BLESSING_FILE = "blessing.json"
PREDICTIONS_FILE = "test_predictions.jsonl"
# task -> (blessing metric, higher is better, baseline name)
BLESSING = {
    "classification": ("accuracy", True, "majority class"),
    "pair": ("accuracy", True, "majority class"),
    "regression": ("mse", False, "train mean"),
    "ner": ("f1", True, "no entities"),
    "squad1": ("f1", True, "first sentence of the context"),
    "squad2": ("f1", True, "no answer"),
}


class EvaluationError(ValueError):
    """Evaluation inputs are missing or inconsistent."""


@dataclasses.dataclass(frozen=True)
class EvaluateSpec:
    """The Evaluate stage.

    Args:
        export_dir: the SavedModel version folder (holding saved_model.pb) to score.
        task: one of `keras_bert.tasks.TASKS`.
        test: the raw test file (any format `components.task_files` reads).
        output_dir: where evaluation.json, the predictions and blessing.json go.
        labels: class names in the model's output order (classification, pair);
            the tag set for NER. Defaults to None.
        train_label_counts: {label: count} of the training split, as TaskData counted
            them: the majority class (classification, pair) or the training mean
            (regression, labels as numbers) of the baseline. Defaults to None.
        read: `components.task_files.ReadOptions` for the test file.
            Defaults to ReadOptions().
        batch_size: examples per signature call. Defaults to 32.
        bless_margin: how much the model must beat the baseline by. Defaults to 0.0.
    """

    export_dir: str
    task: str
    test: str
    output_dir: str
    labels: tuple = None
    train_label_counts: dict = None
    read: task_files.ReadOptions = task_files.ReadOptions()
    batch_size: int = 32
    bless_margin: float = 0.0

    def __post_init__(self):
        if self.task not in BLESSING:
            raise EvaluationError(f"task must be one of {tuple(BLESSING)}; got {self.task!r}")
        if self.batch_size < 1:
            raise EvaluationError("batch_size must be >= 1")


# --------------------------------------------------------------------------------------
# Baselines and metrics (plain functions of labels and predictions).


def majority_label(label_counts):
    """The most frequent label of {label: count} (ties: the first in sorted order)."""
    if not label_counts:
        raise EvaluationError("no training label counts for the majority baseline")
    return sorted(label_counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[0][0]


def mean_label(label_counts):
    """The mean of numeric labels given as {label: count}."""
    if not label_counts:
        raise EvaluationError("no training label counts for the mean baseline")
    try:
        total = sum(float(label) * count for label, count in label_counts.items())
    except ValueError as e:
        raise EvaluationError(f"regression label counts must be numbers: {e}") from None
    return total / sum(label_counts.values())


def confusion_matrix(gold, predicted, num_classes):
    """[gold class][predicted class] counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for g, p in zip(gold, predicted):
        matrix[g, p] += 1
    return matrix.tolist()


def per_class_metrics(matrix, labels):
    """{label: {"precision", "recall", "f1", "support"}} from a confusion matrix."""
    m = np.asarray(matrix)
    out = {}
    for i, label in enumerate(labels):
        tp, predicted, support = int(m[i, i]), int(m[:, i].sum()), int(m[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[str(label)] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


def classification_scores(gold, predicted, labels):
    """Accuracy, macro F1, MCC, per-class metrics and the confusion matrix."""
    classes = list(range(len(labels)))
    matrix = confusion_matrix(gold, predicted, len(labels))
    return {"accuracy": bert_metrics.accuracy(gold, predicted),
            "macro_f1": bert_metrics.f1_macro(gold, predicted, classes=classes),
            "matthews_corrcoef": bert_metrics.matthews_corrcoef(gold, predicted),
            "per_class": per_class_metrics(matrix, labels), "confusion_matrix": matrix}


def regression_scores(gold, predicted):
    """Pearson, Spearman (`scipy.stats`) and MSE; correlations are NaN for constant input."""
    import scipy.stats

    gold, predicted = np.asarray(gold, np.float64), np.asarray(predicted, np.float64)
    constant = len(gold) < 2 or np.ptp(gold) == 0 or np.ptp(predicted) == 0
    pearson = math.nan if constant else float(scipy.stats.pearsonr(gold, predicted)[0])
    spearman = math.nan if constant else float(scipy.stats.spearmanr(gold, predicted)[0])
    return {"pearson": pearson, "spearman": spearman,
            "mse": float(np.mean((gold - predicted) ** 2)) if len(gold) else math.nan}


def entity_span_scores(gold, predicted):
    """Entity-level precision/recall/F1 over exact (type, start, end) matches.

    Args:
        gold: per sentence, a list of (type, start, end).
        predicted: per sentence, a list of (type, start, end).

    Returns:
        {"precision", "recall", "f1", "macro_f1", "num_true", "num_pred",
        "num_correct", "per_type": {type: {"precision", "recall", "f1", "support"}}},
        as `keras_bert.metrics.entity_scores` computes them from tags.
    """
    if len(gold) != len(predicted):
        raise EvaluationError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    true_set = {(i,) + tuple(e) for i, sentence in enumerate(gold) for e in sentence}
    pred_set = {(i,) + tuple(e) for i, sentence in enumerate(predicted) for e in sentence}
    correct = true_set & pred_set

    def prf(tp, n_pred, n_true):
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_true if n_true else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    per_type = {}
    for type_ in sorted({e[1] for e in true_set | pred_set}):
        n_true = sum(1 for e in true_set if e[1] == type_)
        p, r, f = prf(sum(1 for e in correct if e[1] == type_),
                      sum(1 for e in pred_set if e[1] == type_), n_true)
        per_type[type_] = {"precision": p, "recall": r, "f1": f, "support": n_true}
    p, r, f = prf(len(correct), len(pred_set), len(true_set))
    return {"precision": p, "recall": r, "f1": f,
            "macro_f1": (sum(v["f1"] for v in per_type.values()) / len(per_type)
                         if per_type else 0.0),
            "num_true": len(true_set), "num_pred": len(pred_set), "num_correct": len(correct),
            "per_type": per_type}


def first_sentence(context):
    """The context's first sentence (as `common.split_sentences` splits it)."""
    sentences = common.split_sentences(context)
    return sentences[0] if sentences else ""


def squad_scores(gold, answers, version):
    """The official SQuAD scores of {qid: answer text} against {qid: [gold texts]}."""
    if version == 1:
        out = bert_metrics.squad_v1_scores(gold, answers)
        out["exact"] = out.pop("exact_match")
        return out
    return bert_metrics.squad_v2_scores(gold, answers)


# --------------------------------------------------------------------------------------
# The SavedModel's serving signature.


class ServedModel:
    """A SavedModel's `serving_default` signature on raw text, called in batches.

    Args:
        export_dir: the SavedModel version folder.
        batch_size: examples per call. Defaults to 32.
    """

    def __init__(self, export_dir, batch_size=32):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the in-graph tokenizer's ops)

        if not os.path.exists(os.path.join(export_dir, "saved_model.pb")):
            raise EvaluationError(f"{export_dir}: no saved_model.pb to evaluate")
        self._tf = tf
        self.loaded = tf.saved_model.load(export_dir)
        self.signature = self.loaded.signatures["serving_default"]
        self.inputs = sorted(self.signature.structured_input_signature[1])
        self.batch_size = batch_size

    def __call__(self, texts, texts_b=None):
        """{output name: numpy array over all texts}; string outputs as str."""
        tf = self._tf
        if ("text_b" in self.inputs) != (texts_b is not None):
            raise EvaluationError(f"the SavedModel takes {self.inputs}; got "
                                  f"{'text and text_b' if texts_b is not None else 'text only'}")
        parts = collections.defaultdict(list)
        for start in range(0, len(texts), self.batch_size):
            kwargs = {"text": tf.constant(list(texts[start:start + self.batch_size]), tf.string)}
            if texts_b is not None:
                kwargs["text_b"] = tf.constant(list(texts_b[start:start + self.batch_size]),
                                               tf.string)
            for name, value in self.signature(**kwargs).items():
                parts[name].append(value.numpy())
        out = {}
        for name, chunks in parts.items():
            if chunks[0].ndim >= 2 and any(c.shape[1:] != chunks[0].shape[1:] for c in chunks):
                # Per-batch padding (entities per sentence): pad to the widest batch.
                width = max(c.shape[1] for c in chunks)
                fill = b"" if chunks[0].dtype == object else (-1 if name.endswith(("start", "end"))
                                                             else 0)
                chunks = [np.pad(c, [(0, 0), (0, width - c.shape[1])] + [(0, 0)] * (c.ndim - 2),
                                 constant_values=fill) for c in chunks]
            value = np.concatenate(chunks)
            if value.dtype == object:
                value = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value) \
                    if value.size else value
            out[name] = value
        return out


def _json_value(value):
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def signature_rows(outputs):
    """Per-example answers of a batch `serving_default` call, as JSON-ready dicts.

    What the model server returns for each example of a batch, under the signature's
    own output names (`keras_bert.export`): arrays become lists, numbers Python
    numbers, strings text. NER's `entity_*` outputs, padded to the batch's most
    entities, are cut at the example's `num_entities`, so a row never depends on
    the batch it was computed in. Evaluate and `components.predict` both read
    served outputs through it.

    Args:
        outputs: {output name: array over the batch}, as `ServedModel` or
            `serving.client.predict` return them (strings as str or bytes).

    Returns:
        One dict {output name: value} per example.

    Example:
        >>> signature_rows({"label": np.array([b"pos"]), "label_id": np.array([1])})
        [{'label': 'pos', 'label_id': 1}]
    """
    names = sorted(outputs)
    if not names:
        return []
    counts = outputs.get("num_entities")
    rows = []
    for i in range(len(outputs[names[0]])):
        row = {}
        for name in names:
            value = outputs[name][i]
            if counts is not None and name.startswith("entity_"):
                value = value[: int(counts[i])]
            row[name] = _json_value(value)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------
# Per task: predictions on the test split, metrics, baseline.


def _score_text(spec, model, examples):
    pair = spec.task == "pair" or ("text_b" in model.inputs)
    texts = [e.text for e in examples]
    texts_b = [e.text_b or "" for e in examples] if pair else None
    out = model(texts, texts_b)
    if spec.task == "regression":
        predicted = out["score"].astype(float).tolist()
        gold = [float(e.label) for e in examples]
        mean = mean_label(spec.train_label_counts)
        metrics = regression_scores(gold, predicted)
        baseline = regression_scores(gold, [mean] * len(gold))
        baseline.update(value=mean)
        records = [{"guid": e.guid, "text": e.text, "text_b": e.text_b, "label": g, "score": p}
                   for e, g, p in zip(examples, gold, predicted)]
        return metrics, baseline, records
    labels = [str(l) for l in spec.labels or ()]
    if not labels:
        raise EvaluationError("classification needs the model's labels")
    probs = out["probabilities"].astype(np.float64)
    if probs.shape[1] != len(labels):
        raise EvaluationError(f"the SavedModel has {probs.shape[1]} classes but {len(labels)} "
                              f"labels were given")
    unknown = sorted({str(e.label) for e in examples} - set(labels))
    if unknown:
        raise EvaluationError(f"{spec.test}: test labels not in the model's label set "
                              f"{labels}: {', '.join(unknown)}")
    gold = [labels.index(str(e.label)) for e in examples]
    predicted = probs.argmax(-1).tolist()
    metrics = classification_scores(gold, predicted, labels)
    majority = str(majority_label(spec.train_label_counts))
    if majority not in labels:
        raise EvaluationError(f"majority training label {majority!r} is not a model label")
    baseline = classification_scores(gold, [labels.index(majority)] * len(gold), labels)
    baseline.update(label=majority)
    records = [{"guid": e.guid, "text": e.text, "text_b": e.text_b, "label": str(e.label),
                "predicted_label": labels[p], "probabilities": row.tolist()}
               for e, p, row in zip(examples, predicted, probs)]
    return metrics, baseline, records


def _score_entities(spec, model, examples):
    texts = [e.text for e in examples]
    rows = signature_rows(model(texts))
    gold, predicted, records = [], [], []
    mismatches = 0
    for example, text, row in zip(examples, texts, rows):
        entities = []
        for type_, start, end, entity_text, score in zip(
                row["entity_type"], row["entity_start"], row["entity_end"], row["entity_text"],
                row["entity_score"]):
            entity = {"type": type_, "start": start, "end": end, "text": entity_text,
                      "score": score}
            if text[start:end] != entity_text:
                mismatches += 1
            entities.append(entity)
        gold_entities = [{k: e[k] for k in ("type", "start", "end", "text")}
                         for e in tasks.entity_spans(example, example.tags)]
        gold.append([(e["type"], e["start"], e["end"]) for e in gold_entities])
        predicted.append([(e["type"], e["start"], e["end"]) for e in entities])
        records.append({"guid": example.guid, "text": text, "entities": entities,
                        "gold_entities": gold_entities})
    metrics = entity_span_scores(gold, predicted)
    metrics["offset_mismatches"] = mismatches
    baseline = entity_span_scores(gold, [[] for _ in gold])
    return metrics, baseline, records


def _score_answers(spec, model, squad_records):
    version = 2 if spec.task == "squad2" else 1
    examples = [r.example for r in squad_records]
    rows = signature_rows(model([e.question for e in examples], [e.context for e in examples]))
    gold = {e.qas_id: list(r.gold_texts) for e, r in zip(examples, squad_records)}
    answers, records, mismatches = {}, [], 0
    for example, row in zip(examples, rows):
        text, start, end = row["answer_text"], row["answer_start"], row["answer_end"]
        if start >= 0 and example.context[start:end] != text:
            mismatches += 1
        answers[example.qas_id] = text if start >= 0 else ""
        records.append({"id": example.qas_id, "question": example.question, "answer": text,
                        "start": start, "end": end, "score": row["score"],
                        "null_score": row["null_score"], "gold": gold[example.qas_id]})
    metrics = squad_scores(gold, answers, version)
    metrics["offset_mismatches"] = mismatches
    if version == 1:
        baseline_answers = {e.qas_id: first_sentence(e.context) for e in examples}
    else:
        baseline_answers = {qid: "" for qid in gold}
    return metrics, squad_scores(gold, baseline_answers, version), records


def _read_test(spec):
    examples, bad = task_files.read_examples(spec.test, spec.task, spec.read)
    if not examples:
        raise EvaluationError(f"{spec.test}: no usable test examples ({len(bad)} bad record(s)"
                              f"{', first: ' + str(bad[0]) if bad else ''})")
    return examples, bad


def _write_json(value, path):
    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (float, np.floating)):
            return None if math.isnan(float(v)) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        return v

    with common.atomic_write(path) as f:
        json.dump(clean(value), f, indent=2, ensure_ascii=False)
        f.write("\n")


def run(spec):
    """Scores the SavedModel on the test split and writes the blessing.

    Args:
        spec: an `EvaluateSpec`.

    Returns:
        The evaluation dict written to `evaluation.json`: "task", "examples",
        "metrics", "baseline", "blessing" and the bad test records.

    Example:
        >>> result = run(EvaluateSpec(export_dir="export/bert/1", task="classification",
        ...                           test="test.jsonl", output_dir="eval",
        ...                           labels=("neg", "pos"), train_label_counts={"neg": 9, "pos": 5}))
        >>> result["blessing"]["blessed"]
    """
    started = time.time()
    os.makedirs(spec.output_dir, exist_ok=True)
    examples, bad = _read_test(spec)
    model = ServedModel(spec.export_dir, spec.batch_size)
    if spec.task == "ner":
        metrics, baseline, records = _score_entities(spec, model, examples)
    elif spec.task in ("squad1", "squad2"):
        metrics, baseline, records = _score_answers(spec, model, examples)
    else:
        metrics, baseline, records = _score_text(spec, model, examples)
    name, higher, baseline_name = BLESSING[spec.task]
    value, reference = metrics[name], baseline[name]
    blessed = bool(value > reference + spec.bless_margin if higher
                  else value < reference - spec.bless_margin)
    blessing = {"blessed": blessed, "model": os.path.abspath(spec.export_dir), "task": spec.task,
                "metric": name, "higher_is_better": higher, "value": value,
                "baseline": baseline_name, "baseline_value": reference,
                "bless_margin": spec.bless_margin}
    result = {"task": spec.task, "test": spec.test, "examples": len(examples),
              "metrics": metrics, "baseline": dict(baseline, name=baseline_name),
              "blessing": blessing, "labels": list(spec.labels) if spec.labels else None,
              "bad_records": len(bad), "bad_record_locations": [str(b) for b in bad[:100]],
              "seconds": time.time() - started}
    _write_json(result, os.path.join(spec.output_dir, EVALUATION_FILE))
    _write_json(blessing, os.path.join(spec.output_dir, BLESSING_FILE))
    with common.atomic_write(os.path.join(spec.output_dir, PREDICTIONS_FILE)) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    common.log_stage(STAGE, f"{spec.task}: {name} {value:.4f} vs {baseline_name} {reference:.4f} "
          f"(bless_margin {spec.bless_margin}) on {len(examples)} test examples from the SavedModel "
          f"{spec.export_dir}: {'BLESSED' if blessed else 'NOT BLESSED'}")
    return result


def flat_metrics(result):
    """The numbers of an evaluation for a stage record: metrics, baseline_*, blessed."""
    out = {"examples": result["examples"]}
    for key, value in result["metrics"].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    for key, value in result["baseline"].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"baseline_{key}"] = value
    out["blessed"] = result["blessing"]["blessed"]
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def read_blessing(path):
    """`blessing.json` → dict (raises EvaluationError if missing or malformed)."""
    try:
        with open(path, encoding="utf-8") as f:
            blessing = json.load(f)
    except FileNotFoundError:
        raise EvaluationError(f"{path}: no blessing (run Evaluate first)") from None
    except json.JSONDecodeError as e:
        raise EvaluationError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(blessing, dict) or not isinstance(blessing.get("blessed"), bool) \
            or not isinstance(blessing.get("model"), str):
        raise EvaluationError(f'{path}: expected an object with "blessed" (bool) and "model"')
    return blessing


def build_parser():
    """The `python -m components.evaluate` flag parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--export_dir", required=True, help="SavedModel version folder.")
    parser.add_argument("--task", required=True, choices=tuple(BLESSING))
    parser.add_argument("--test", required=True, help="Raw test file.")
    parser.add_argument("--output", required=True, help="Output directory.")
    parser.add_argument("--labels", default=None,
                        help="Comma-separated class names in the model's order (classification, pair).")
    parser.add_argument("--labels_file", default=None, help="labels.txt instead of --labels.")
    parser.add_argument("--train_stats", default=None,
                        help="TaskData's statistics JSON: the train split's label counts for the "
                             "majority / mean baseline.")
    parser.add_argument("--batch_size", type=int, default=EvaluateSpec.batch_size)
    parser.add_argument("--bless_margin", type=float, default=EvaluateSpec.bless_margin)
    task_files.add_read_arguments(parser)
    return parser


def parse_args(argv=None):
    """Flags → `EvaluateSpec`."""
    args = build_parser().parse_args(argv)
    labels = tuple(args.labels.split(",")) if args.labels else None
    if args.labels_file:
        labels = tuple(task_files.read_labels(args.labels_file))
    counts = None
    if args.train_stats:
        with open(args.train_stats, encoding="utf-8") as f:
            counts = json.load(f)["splits"]["train"]["label_counts"]
    return EvaluateSpec(export_dir=args.export_dir, task=args.task, test=args.test,
                        output_dir=args.output, labels=labels, train_label_counts=counts,
                        read=task_files.read_options_from_args(args), batch_size=args.batch_size,
                        bless_margin=args.bless_margin)


def main(argv=None):
    run(parse_args(argv))


if __name__ == "__main__":
    main()
