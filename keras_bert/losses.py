"""Losses and Keras metrics of BERT pre-training, as in google-research/bert.

`masked_lm_loss` is `run_pretraining.py`'s `get_masked_lm_output` loss: per-position
cross-entropy weighted by `masked_lm_weights`, summed and divided by
`sum(weights) + 1e-5`, so padded prediction slots cost nothing.

On TensorFlow the cross-entropy over the vocabulary is `sparse_cross_entropy`'s
own forward and closed-form gradient, about half the time of TensorFlow's fused
`SparseSoftmaxCrossEntropyWithLogits` kernel at BERT's vocabulary size, with the
same values.
"""

import keras
from keras import ops


def sparse_cross_entropy(labels, logits):
    """Cross-entropy of integer labels against logits over the last axis, per row.

    The same as `keras.losses.sparse_categorical_crossentropy(labels, logits,
    from_logits=True)`. On TensorFlow it is computed as `log(sum(exp(z - max))) -
    (z[label] - max)`, with the gradient `softmax(z) - onehot(label)` written out
    under `tf.custom_gradient`: TensorFlow's fused kernel for the same thing makes
    its gradient in the forward pass and takes about twice as long at a vocabulary
    of 30,522 (measured on a 2-core CPU: 25.5 ms against 13.6 ms for 320 rows,
    forward and backward). A label outside `[0, classes)` is an error on CPU, as
    with the fused kernel.

    Args:
        labels: int labels, shape `logits.shape[:-1]`.
        logits: float32 logits, (..., classes).

    Returns:
        float32 losses, shape `logits.shape[:-1]`.
    """
    if keras.backend.backend() != "tensorflow":
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    import tensorflow as tf

    logits = tf.convert_to_tensor(logits)
    classes = tf.shape(logits)[-1]
    flat_labels = tf.reshape(tf.cast(labels, tf.int32), [-1])

    @tf.custom_gradient
    def rows(flat_logits):
        shifted = flat_logits - tf.reduce_max(flat_logits, axis=-1, keepdims=True)
        exp = tf.exp(shifted)
        total = tf.reduce_sum(exp, axis=-1)
        picked = tf.gather(shifted, flat_labels[:, None], batch_dims=1)[:, 0]

        def grad(upstream):
            scaled = exp * (upstream / total)[:, None]
            at_label = tf.stack([tf.range(tf.shape(flat_labels)[0]), flat_labels], axis=1)
            return tf.tensor_scatter_nd_sub(scaled, at_label, upstream)

        return tf.math.log(total) - picked, grad

    losses = rows(tf.reshape(logits, [-1, classes]))
    return tf.reshape(losses, tf.shape(logits)[:-1])


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
    per_position = sparse_cross_entropy(labels, logits)
    return ops.sum(per_position * weights) / (ops.sum(weights) + 1e-5)


def next_sentence_loss(next_sentence_labels, nsp_logits):
    """Mean NSP cross-entropy; labels (batch,) or (batch, 1), 0 = is-next, 1 = random."""
    labels = ops.reshape(ops.cast(next_sentence_labels, "int32"), (-1,))
    per_example = keras.losses.sparse_categorical_crossentropy(
        labels, ops.cast(nsp_logits, "float32"), from_logits=True)
    return ops.mean(per_example)


def _argmax_last(logits):
    """int32 argmax over the last axis.

    On TensorFlow this is the plain `tf.math.argmax`: `keras.ops.argmax` first maps
    -0.0 to the smallest negative float with five extra element-wise passes, which
    for MLM logits over 30,522 words cost 12 ms of a 370 ms pre-training step, and
    changes the answer only in a tie between a 0.0 and a -0.0 maximum.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.math.argmax(logits, axis=-1, output_type=tf.int32)
    return ops.cast(ops.argmax(logits, axis=-1), "int32")


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
        predicted = _argmax_last(y_pred)
        hits = ops.cast(ops.equal(predicted, ops.cast(y_true, "int32")), "float32")
        weights = ops.ones_like(hits) if sample_weight is None else ops.cast(sample_weight, "float32")
        self.correct.assign_add(ops.sum(hits * weights))
        self.total.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)
