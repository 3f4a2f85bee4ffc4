"""Losses and Keras metrics of BERT pre-training, as in google-research/bert.

`masked_lm_loss` is `run_pretraining.py`'s `get_masked_lm_output` loss: per-position
cross-entropy weighted by `masked_lm_weights`, summed and divided by
`sum(weights) + 1e-5`, so padded prediction slots cost nothing.
"""

import keras
from keras import ops


def masked_lm_loss(masked_lm_ids, mlm_logits, masked_lm_weights):
    """Weighted mean MLM cross-entropy over real (weight > 0) predictions.

    Args:
        masked_lm_ids: (batch, predictions) int labels.
        mlm_logits: (batch, predictions, vocab) logits.
        masked_lm_weights: (batch, predictions) 1.0 for real predictions, 0.0 for padding.
    """
    logits = ops.cast(mlm_logits, "float32")
    labels = ops.cast(masked_lm_ids, "int32")
    weights = ops.cast(masked_lm_weights, "float32")
    per_position = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return ops.sum(per_position * weights) / (ops.sum(weights) + 1e-5)


def next_sentence_loss(next_sentence_labels, nsp_logits):
    """Mean NSP cross-entropy; labels (batch,) or (batch, 1), 0 = is-next, 1 = random."""
    labels = ops.reshape(ops.cast(next_sentence_labels, "int32"), (-1,))
    per_example = keras.losses.sparse_categorical_crossentropy(
        labels, ops.cast(nsp_logits, "float32"), from_logits=True)
    return ops.mean(per_example)


@keras.saving.register_keras_serializable(package="keras_bert")
class WeightedAccuracy(keras.metrics.Metric):
    """Accuracy of argmax(logits) against integer labels, weighted per position.

    Args:
        name: metric name. Defaults to "accuracy".
    """

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        hits = ops.cast(ops.equal(predicted, ops.cast(y_true, "int32")), "float32")
        weights = ops.ones_like(hits) if sample_weight is None else ops.cast(sample_weight, "float32")
        self.correct.assign_add(ops.sum(hits * weights))
        self.total.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)
