"""Small SavedModels built with plain TensorFlow, for the serving tests and load test.

Two kinds of model are written:

* `build_text_model`: a TF2 `tf.Module` saved with `tf.saved_model.save`. Its
  signatures take raw strings, like the project's exported BERT models, and compute
  hand-checkable answers from the character count (see `expected_text_outputs`).
* `build_example_model`: a TF1-style SavedModel written with
  `tf.compat.v1.saved_model.Builder`, holding `classify` and `regress` signatures.

Why two writers: the stock server's Classify/Regress APIs require a signature whose
`method_name` is `tensorflow/serving/classify` or `tensorflow/serving/regress`.
TF2's `tf.saved_model.save` hard-codes `method_name=PREDICT_METHOD_NAME` for every
signature (tensorflow/python/saved_model/save.py, `_generate_signatures`), and
neither `tf.function` nor the `signatures=` argument can change it. The two ways
out are the TF1 `Builder` with `classification_signature_def` /
`regression_signature_def` (used here), or rewriting `method_name` in the written
`saved_model.pb` after a TF2 save (`rewrite_method_name`, also tested): the loader
ignores method names, so both load with `tf.saved_model.load`.
"""

import math
import os

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2, regression_pb2

LABELS = ("negative", "positive")
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def expected_text_outputs(texts, weight=1.0, version=1):
    """Returns the known answers of `build_text_model`'s `serving_default`.

    Args:
        texts: list of str.
        weight: the model's weight. Defaults to 1.0.
        version: the version baked into the model. Defaults to 1.

    Returns:
        dict with `probabilities` (n, 2), `label` (n,) and `model_version` (n,).
    """
    probs, labels = [], []
    for text in texts:
        p1 = 1.0 / (1.0 + math.exp(-weight * (len(text) - 4)))
        probs.append([1.0 - p1, p1])
        labels.append(LABELS[int(p1 > 0.5)])
    return {
        "probabilities": np.array(probs, np.float32).reshape(-1, 2),
        "label": labels,
        "model_version": [version] * len(texts),
    }


class _TextModel(tf.Module):
    """p(positive) = sigmoid(weight * (num_chars - 4)); optional dense busywork."""

    def __init__(self, version, weight, dense_layers, width):
        super().__init__()
        self.version = tf.constant(version, tf.int64)
        self.weight = tf.Variable(weight, dtype=tf.float32, name="weight")
        rng = np.random.default_rng(0)
        self.kernels = [
            tf.Variable(rng.normal(size=(width, width)).astype(np.float32) / math.sqrt(width))
            for _ in range(dense_layers)
        ]
        self.width = width

    def _logit(self, num_chars, text):
        logit = self.weight * (num_chars - 4.0)
        if self.kernels:
            # Byte histogram through a few dense layers: compute whose cost grows
            # with batch size sub-linearly, so that batching has something to win.
            ids = tf.strings.to_hash_bucket_fast(tf.strings.bytes_split(text), self.width)
            hist = tf.reduce_sum(tf.one_hot(ids, self.width), axis=1)  # (batch, width)
            hidden = hist.to_tensor() if isinstance(hist, tf.RaggedTensor) else hist
            for kernel in self.kernels:
                hidden = tf.tanh(tf.matmul(hidden, kernel))  # (batch, width)
            logit += 1e-3 * tf.reduce_sum(hidden, axis=1)
        return logit

    def _outputs(self, num_chars, text):
        p1 = tf.sigmoid(self._logit(num_chars, text))
        probabilities = tf.stack([1.0 - p1, p1], axis=1)  # (batch, 2)
        label = tf.where(p1 > 0.5, LABELS[1], LABELS[0])
        model_version = tf.fill(tf.shape(text), self.version)
        return {"probabilities": probabilities, "label": label, "model_version": model_version}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        num_chars = tf.cast(tf.strings.length(text, unit="UTF8_CHAR"), tf.float32)
        return self._outputs(num_chars, text)

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="text"),
        tf.TensorSpec([None], tf.string, name="text_b"),
    ])
    def pair(self, text, text_b):
        num_chars = tf.cast(
            tf.strings.length(text, unit="UTF8_CHAR") + tf.strings.length(text_b, unit="UTF8_CHAR"),
            tf.float32)
        out = self._outputs(num_chars, text)
        return {"probabilities": out["probabilities"], "label": out["label"]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="data")])
    def decode(self, data):
        # errors="strict" makes the model itself raise InvalidArgumentError on bad
        # UTF-8: the path where the server must map a model error to a status.
        chars = tf.strings.unicode_decode(data, "UTF-8", errors="strict")
        return {"num_chars": tf.cast(chars.row_lengths(), tf.int32)}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.int32, name="ids")])
    def score_ids(self, ids):
        total = tf.reduce_sum(ids, axis=1)  # (batch,)
        return {"total": total, "scaled": tf.cast(total, tf.float32) * self.weight}


def build_text_model(export_dir, version=1, weight=1.0, dense_layers=0, width=256,
                     warmup_texts=("warm up", "hello")):
    """Writes the TF2 raw-text toy model to `export_dir` (a version folder).

    Signatures: `serving_default` (text -> probabilities, label, model_version),
    `pair` (text, text_b -> probabilities, label), `decode` (data -> num_chars,
    strict UTF-8 in the model), `score_ids` (ids int32 (n, 4) -> total, scaled).

    Args:
        export_dir: the version folder to write, e.g. `base/1`.
        version: the number the model reports as `model_version`. Defaults to 1.
        weight: slope of the logit. Defaults to 1.0.
        dense_layers: number of (width x width) dense layers of extra compute, for
            load tests. Defaults to 0 (answers are then `expected_text_outputs`).
        width: width of those layers. Defaults to 256.
        warmup_texts: texts of the warm-up requests written to
            `assets.extra/tf_serving_warmup_requests`; None writes no file.
            Defaults to two short texts.

    Returns:
        export_dir.
    """
    module = _TextModel(version, weight, dense_layers, width)
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.serve,
        "pair": module.pair,
        "decode": module.decode,
        "score_ids": module.score_ids,
    })
    if warmup_texts is not None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "warmup"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(list(warmup_texts), tf.string))
        write_warmup(export_dir, [request])
    return export_dir


def build_example_model(export_dir, weight=1.0):
    """Writes a TF1 SavedModel with Classify/Regress signatures to `export_dir`.

    Each tf.Example has features `text` (bytes) and `x` (float). The logit is
    `weight * (num_chars(text) - 4) + x`. Signatures: `serving_default` and
    `classify` (method tensorflow/serving/classify; outputs `classes` (n, 2) of
    "negative"/"positive" and `scores` (n, 2) of probabilities) and `regress`
    (method tensorflow/serving/regress; `outputs` (n,) = the logit). Its warm-up
    file holds one Classify and one Regress request.

    Args:
        export_dir: the version folder to write; must not exist.
        weight: slope of the logit. Defaults to 1.0.

    Returns:
        export_dir.
    """
    with tf.Graph().as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        features = tf.io.parse_example(serialized, {
            "text": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
        })
        w = tf.compat.v1.Variable(weight, dtype=tf.float32, name="weight")
        num_chars = tf.cast(tf.strings.length(features["text"], unit="UTF8_CHAR"), tf.float32)
        logit = w * (num_chars - 4.0) + features["x"]  # (batch,)
        p1 = tf.sigmoid(logit)
        scores = tf.stack([1.0 - p1, p1], axis=1)  # (batch, 2)
        classes = tf.tile(tf.constant([list(LABELS)]), [tf.shape(serialized)[0], 1])
        classify = tf.compat.v1.saved_model.classification_signature_def(
            examples=serialized, classes=classes, scores=scores)
        regress = tf.compat.v1.saved_model.regression_signature_def(
            examples=serialized, predictions=logit)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(
                sess, [tf.saved_model.SERVING],
                signature_def_map={"serving_default": classify, "classify": classify,
                                   "regress": regress})
            builder.save()
    example = tf.train.Example()
    example.features.feature["text"].bytes_list.value.append(b"warm up")
    classify_request = classification_pb2.ClassificationRequest()
    classify_request.model_spec.signature_name = "classify"
    classify_request.input.example_list.examples.append(example)
    regress_request = regression_pb2.RegressionRequest()
    regress_request.model_spec.signature_name = "regress"
    regress_request.input.example_list.examples.append(example)
    write_warmup(export_dir, [classify_request, regress_request])
    return export_dir


def expected_example_logit(text, x, weight=1.0):
    """Returns the logit `build_example_model` computes for one example."""
    return weight * (len(text) - 4) + x


def rewrite_method_name(export_dir, signature_name, method_name):
    """Sets `method_name` of one signature in a written SavedModel, in place.

    The TF2 alternative to the TF1 Builder (see the module docstring).

    Args:
        export_dir: folder holding `saved_model.pb`.
        signature_name: the signature to change.
        method_name: e.g. `tensorflow/serving/classify`.
    """
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if signature_name in meta_graph.signature_def:
            meta_graph.signature_def[signature_name].method_name = method_name
    with open(path, "wb") as f:
        f.write(saved_model.SerializeToString())


def write_warmup(export_dir, requests):
    """Writes warm-up requests as the stock server's TFRecord of `PredictionLog`s.

    Args:
        export_dir: the version folder.
        requests: list of `PredictRequest`, `ClassificationRequest` or
            `RegressionRequest` protos.
    """
    path = os.path.join(export_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            if isinstance(request, classification_pb2.ClassificationRequest):
                log = prediction_log_pb2.PredictionLog(
                    classify_log=prediction_log_pb2.ClassifyLog(request=request))
            elif isinstance(request, regression_pb2.RegressionRequest):
                log = prediction_log_pb2.PredictionLog(
                    regress_log=prediction_log_pb2.RegressLog(request=request))
            else:
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def write_broken_version(export_dir):
    """Writes a version folder whose `saved_model.pb` is garbage (fails to load)."""
    os.makedirs(export_dir)
    with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a SavedModel")
