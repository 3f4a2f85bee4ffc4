"""Evaluate scores the exported SavedModel (not the Keras model); Push honours its blessing.

The SavedModel test uses a tiny classifier whose head weights are scaled up so that
its probabilities differ clearly between examples: Evaluate's per-example
probabilities (from `tf.saved_model.load` and the serving signature on raw text)
must equal the Keras model's on the same test split, within 1e-4.
"""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from components import evaluate, push
from keras_bert import checkpoints, metrics
from keras_bert.export import export_saved_model
from keras_bert.tokenizer import BertTokenizer
from tests.components.test_finetune import keyword_examples, tiny_config, vocab_tokens

LABELS = ("neg", "pos")


# --------------------------------------------------------------------------------------
# Plain functions.


def test_entity_span_scores_equal_tag_based_entity_scores():
    from keras_bert import tasks
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"], ["O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"], ["B-PER"]]
    words = [["Alice", "Smith", "in", "Paris"], ["near", "New", "York"], ["x"]]
    spans = lambda tags_list: [  # noqa: E731
        [(e["type"], e["start"], e["end"]) for e in
         tasks.entity_spans(tasks.TaggedExample(guid=str(i), words=tuple(w), tags=tuple(t)), t)]
        for i, (w, t) in enumerate(zip(words, tags_list))]
    by_span = evaluate.entity_span_scores(spans(gold), spans(pred))
    by_tags = metrics.entity_scores(gold, pred)
    for key in ("precision", "recall", "f1", "macro_f1", "num_true", "num_pred", "num_correct"):
        assert by_span[key] == pytest.approx(by_tags[key]), key
    assert by_span["per_type"] == by_tags["per_type"]
    # Hand count: 3 gold, 4 predicted, 2 right (Paris, New York).
    assert (by_span["num_true"], by_span["num_pred"], by_span["num_correct"]) == (3, 4, 2)


def test_baselines_and_classification_tables():
    assert evaluate.majority_label({"a": 3, "b": 5, "c": 5}) == "b"  # ties: sorted order
    assert evaluate.mean_label({"1.0": 2, "4.0": 1}) == pytest.approx(2.0)
    with pytest.raises(evaluate.EvaluationError, match="numbers"):
        evaluate.mean_label({"x": 1})
    assert evaluate.first_sentence("It rains. Then it stops! Sun?") == "It rains."
    assert evaluate.first_sentence("No end in sight") == "No end in sight"
    scores = evaluate.classification_scores([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert scores["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert scores["accuracy"] == pytest.approx(0.6)
    assert scores["per_class"]["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert scores["per_class"]["c"]["f1"] == 0.0
    reg = evaluate.regression_scores([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert reg["pearson"] == pytest.approx(0.8) and reg["spearman"] == pytest.approx(0.8)
    assert reg["mse"] == pytest.approx(0.5)
    assert np.isnan(evaluate.regression_scores([1.0, 2.0], [3.0, 3.0])["pearson"])


# --------------------------------------------------------------------------------------
# The SavedModel is what Evaluate scores.


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny classifier with a sharp head, its SavedModel and a test split."""
    import keras

    root = tmp_path_factory.mktemp("evaluate")
    tokens = vocab_tokens()
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(tokens) + "\n")
    keras.utils.set_random_seed(11)
    model = checkpoints.build_model(tiny_config(len(tokens)), "classifier", num_classes=2)
    rng = random.Random(2)
    rows = keyword_examples(48, rng)
    rows.append({"text": "Crimson " * 40 + "rose", "label": "pos"})  # longer than max_seq_length
    # Aim the head along the main direction in which the test examples' pooled vectors
    # differ, so that the probabilities spread over (0, 1) instead of sitting at ~0.5.
    tokenizer = BertTokenizer.from_vocab(str(vocab), do_lower_case=True)
    enc = tokenizer.encode_batch([r["text"] for r in rows], max_seq_length=32)
    pooled = np.asarray(model.encoder({k: np.asarray(v, "int32") for k, v in enc.items()},
                                      training=False)["pooled_output"], np.float64)
    centered = pooled - pooled.mean(0)
    direction = np.linalg.svd(centered, full_matrices=False)[2][0]
    scale = 3.0 / (centered @ direction).std()
    kernel, bias = [w for w in model.weights if "encoder" not in w.path][-2:]
    assert kernel.shape == (pooled.shape[1], 2) and bias.shape == (2,)
    kernel.assign(np.stack([np.zeros_like(direction), scale * direction], 1).astype("float32"))
    bias.assign(np.asarray([0.0, -scale * pooled.mean(0) @ direction], "float32"))
    test = root / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = export_saved_model(model, str(root / "export"), "clf", str(vocab),
                                max_seq_length=32, labels=list(LABELS), version=1)
    return {"model": model, "vocab": str(vocab), "test": str(test), "rows": rows,
            "export_dir": result.path, "root": root}


def _keras_probabilities(model, vocab, rows, max_seq_length):
    tokenizer = BertTokenizer.from_vocab(vocab, do_lower_case=True)
    enc = tokenizer.encode_batch([r["text"] for r in rows], max_seq_length=max_seq_length)
    logits = np.asarray(model({k: np.asarray(v, "int32") for k, v in enc.items()},
                              training=False)["logits"], np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.slow
def test_evaluate_scores_the_saved_model_equal_to_keras(exported, tmp_path):
    spec = evaluate.EvaluateSpec(export_dir=exported["export_dir"], task="classification",
                                 test=exported["test"], output_dir=str(tmp_path),
                                 labels=LABELS, train_label_counts={"neg": 30, "pos": 20},
                                 batch_size=16)
    result = evaluate.run(spec)
    with open(tmp_path / evaluate.PREDICTIONS_FILE) as f:
        served = np.asarray([json.loads(line)["probabilities"] for line in f])
    keras_probs = _keras_probabilities(exported["model"], exported["vocab"], exported["rows"], 32)
    assert served.shape == keras_probs.shape == (len(exported["rows"]), 2)
    # The head is sharp enough that the comparison means something.
    assert keras_probs[:, 1].max() - keras_probs[:, 1].min() > 0.5
    np.testing.assert_allclose(served, keras_probs, atol=1e-4)
    gold = [LABELS.index(r["label"]) for r in exported["rows"]]
    predicted = keras_probs.argmax(-1).tolist()
    assert result["metrics"]["accuracy"] == pytest.approx(metrics.accuracy(gold, predicted))
    assert result["metrics"]["confusion_matrix"] == evaluate.confusion_matrix(gold, predicted, 2)
    # Majority "neg" (from the given train counts) scored on the same split.
    assert result["baseline"]["accuracy"] == pytest.approx(gold.count(0) / len(gold))
    blessing = json.loads((tmp_path / evaluate.BLESSING_FILE).read_text())
    assert blessing["model"] == os.path.abspath(exported["export_dir"])
    assert blessing["blessed"] == (result["metrics"]["accuracy"] > result["baseline"]["accuracy"])


@pytest.mark.slow
def test_push_refuses_an_unblessed_model(exported, tmp_path):
    # A margin no model can clear: not blessed. Through the CLI, in a fresh process
    # (the SavedModel's tokenizer ops must load without the exporting code).
    stats = tmp_path / "task_data_stats.json"
    stats.write_text(json.dumps({"splits": {"train": {"label_counts": {"neg": 30, "pos": 20}}}}))
    proc = subprocess.run(
        [sys.executable, "-m", "components.evaluate", "--export_dir", exported["export_dir"],
         "--task", "classification", "--test", exported["test"], "--labels", ",".join(LABELS),
         "--train_stats", str(stats), "--bless_margin", "2.0", "--output", str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NOT BLESSED" in proc.stdout
    blessing = str(tmp_path / "eval" / evaluate.BLESSING_FILE)
    assert json.loads(open(blessing).read())["blessed"] is False
    serving_base = tmp_path / "serving"
    serving = serving_base / "clf"
    result = push.run(push.PushSpec(export_dir=exported["export_dir"], blessing=blessing,
                                    serving_base=str(serving_base), model_name="clf"))
    assert result == {"pushed": False, "version": None, "path": None}
    assert not serving.exists() or not os.listdir(serving)
    # No blessing at all, or a blessing of another model: an error, nothing pushed.
    with pytest.raises(push.PushError, match="no blessing"):
        push.run(push.PushSpec(exported["export_dir"], str(tmp_path / "none.json"),
                               str(serving_base), "clf"))
    other = json.loads(open(blessing).read())
    other.update(blessed=True, model=str(tmp_path / "elsewhere"))
    forged = tmp_path / "other.json"
    forged.write_text(json.dumps(other))
    with pytest.raises(push.PushError, match="not the export to push"):
        push.run(push.PushSpec(exported["export_dir"], str(forged), str(serving_base), "clf"))
    assert not serving.exists() or not os.listdir(serving)
    # The same export with a true blessing is pushed as version 1.
    other.update(model=exported["export_dir"])
    forged.write_text(json.dumps(other))
    result = push.run(push.PushSpec(exported["export_dir"], str(forged), str(serving_base), "clf"))
    assert result["pushed"] and result["version"] == 1
    assert (serving / "1" / "saved_model.pb").exists()
