"""Evaluate stage: test-set metrics of a fine-tuned classifier and the blessing decision.

A model is blessed only if its accuracy on the held-out set beats the majority-class
baseline (the most frequent training label, scored on the same set) by more than
`margin`. The decision and every number behind it go to `evaluation.json`; a
`BLESSED` or `NOT_BLESSED` marker file sits beside it for Push.
"""

import argparse
import collections
import dataclasses
import json
import os
import sys

import numpy as np

from keras_bert import metrics as bert_metrics
from keras_bert.checkpoints import load_pretrained
from keras_bert.tokenizer import BertTokenizer


class EvaluationError(ValueError):
    """Evaluation inputs are missing or inconsistent."""


@dataclasses.dataclass(frozen=True)
class EvaluateSpec:
    """The Evaluate stage.

    Args:
        model_dir: fine-tuned checkpoint folder (any format `load_pretrained` reads).
        examples: held-out examples, a list of {"text", "text_b" (optional), "label"}.
        train_labels: training labels, for the majority baseline.
        labels: class names in the classifier's output order.
        output_dir: where evaluation.json and the marker go.
        max_seq_length: tokens per sequence. Defaults to 128.
        batch_size: prediction batch size. Defaults to 64.
        margin: accuracy above the baseline needed to bless. Defaults to 0.0.
    """

    model_dir: str
    examples: tuple
    train_labels: tuple
    labels: tuple
    output_dir: str
    max_seq_length: int = 128
    batch_size: int = 64
    margin: float = 0.0


def majority_baseline(train_labels, test_labels):
    """(majority label, its accuracy on test_labels)."""
    if not train_labels:
        raise EvaluationError("no training labels for the majority baseline")
    label = collections.Counter(train_labels).most_common(1)[0][0]
    acc = float(np.mean([l == label for l in test_labels])) if test_labels else 0.0
    return label, acc


def predict_classes(model, tokenizer, examples, max_seq_length, batch_size):
    """Class probabilities [n, classes] for examples with "text" (and "text_b")."""
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        texts = [e["text"] for e in chunk]
        texts_b = [e.get("text_b") for e in chunk]
        enc = tokenizer.encode_batch(texts, texts_b if any(texts_b) else None,
                                     max_seq_length=max_seq_length)
        logits = np.asarray(model({k: np.asarray(v, "int32") for k, v in enc.items()},
                                  training=False)["logits"], "float32")
        e = np.exp(logits - logits.max(-1, keepdims=True))
        out.append(e / e.sum(-1, keepdims=True))
    return np.concatenate(out) if out else np.zeros((0, 0), "float32")


def run(spec):
    """Scores the model and writes the decision; returns the evaluation dict."""
    os.makedirs(spec.output_dir, exist_ok=True)
    if not spec.examples:
        raise EvaluationError("no held-out examples to evaluate on")
    bert = load_pretrained(spec.model_dir)
    tokenizer = BertTokenizer.from_vocab(bert.vocab_path, do_lower_case=bert.config.do_lower_case)
    labels = list(spec.labels)
    unknown = sorted({e["label"] for e in spec.examples} - set(labels))
    if unknown:
        raise EvaluationError(f"held-out labels not in the label set: {', '.join(map(str, unknown))}")
    probs = predict_classes(bert.model, tokenizer, list(spec.examples), spec.max_seq_length,
                            spec.batch_size)
    y_true = [labels.index(e["label"]) for e in spec.examples]
    y_pred = probs.argmax(-1).tolist()
    majority, baseline = majority_baseline(list(spec.train_labels), [e["label"] for e in spec.examples])
    accuracy = bert_metrics.accuracy(y_true, y_pred)
    result = {
        "examples": len(y_true),
        "accuracy": accuracy,
        "macro_f1": bert_metrics.f1_macro(y_true, y_pred),
        "matthews_corrcoef": bert_metrics.matthews_corrcoef(y_true, y_pred),
        "majority_label": majority,
        "majority_baseline_accuracy": baseline,
        "margin": spec.margin,
        "blessed": bool(accuracy > baseline + spec.margin),
    }
    with open(os.path.join(spec.output_dir, "evaluation.json"), "w") as f:
        json.dump(result, f, indent=2)
    marker = "BLESSED" if result["blessed"] else "NOT_BLESSED"
    for name in ("BLESSED", "NOT_BLESSED"):
        path = os.path.join(spec.output_dir, name)
        if os.path.exists(path):
            os.remove(path)
    open(os.path.join(spec.output_dir, marker), "w").close()
    print(f"[Evaluate] accuracy {accuracy:.4f} vs majority baseline {baseline:.4f} "
          f"({majority!r}) on {len(y_true)} examples: {marker}", flush=True)
    return result
