"""The pre-training losses and metric against TensorFlow's and Keras' own kernels.

`sparse_cross_entropy` replaces TensorFlow's fused softmax cross-entropy kernel in
the MLM loss, and `WeightedAccuracy` uses `tf.math.argmax` instead of
`keras.ops.argmax`: values and gradients must be the ones those give.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_bert import losses


def _fused(labels, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)


def _value_and_grad(fn, labels, logits, upstream):
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = fn(labels, logits)
        weighted = tf.reduce_sum(loss * upstream)
    return loss.numpy(), tape.gradient(weighted, logits).numpy()


@pytest.mark.parametrize("shape", [(7, 11), (3, 5, 30522), (2, 4, 3, 9)])
def test_matches_fused_kernel_in_value_and_gradient(shape):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(shape) * 4).astype("float32")
    labels = rng.integers(0, shape[-1], shape[:-1]).astype("int32")
    upstream = rng.uniform(0.0, 2.0, shape[:-1]).astype("float32")
    ours, ours_grad = _value_and_grad(losses.sparse_cross_entropy, labels, logits, upstream)
    fused, fused_grad = _value_and_grad(_fused, labels, logits, upstream)
    assert ours.shape == shape[:-1]
    np.testing.assert_allclose(ours, fused, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours_grad, fused_grad, rtol=1e-5, atol=1e-7)


def test_hand_worked_row_and_extreme_logits():
    # log(e^0 + e^ln3) - 0 = log 4 for label 0; the gradient is softmax - onehot.
    logits = np.array([[0.0, np.log(3.0)], [1e4, -1e4], [-np.inf, 0.0]], "float32")
    labels = np.array([0, 1, 1], "int32")
    loss, grad = _value_and_grad(losses.sparse_cross_entropy, labels, logits,
                                 np.ones(3, "float32"))
    np.testing.assert_allclose(loss, [np.log(4.0), 2e4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(grad, [[0.25 - 1, 0.75], [1.0, -1.0], [0.0, 0.0]], atol=1e-6)
    assert np.isfinite(grad).all()


def test_label_out_of_range_is_an_error():
    with pytest.raises(tf.errors.InvalidArgumentError):
        losses.sparse_cross_entropy(tf.constant([0, 5]), tf.zeros((2, 5)))


def test_masked_lm_loss_by_hand():
    # Two real positions (loss log 4 and log 2) and one padded slot that costs nothing.
    logits = np.array([[[0.0, np.log(3.0), -np.inf], [0.0, 0.0, -np.inf], [9.0, 0.0, 0.0]]],
                      "float32")
    loss = losses.masked_lm_loss(np.array([[0, 1, 2]]), logits, np.array([[1.0, 1.0, 0.0]]))
    np.testing.assert_allclose(float(loss), (np.log(4.0) + np.log(2.0)) / (2 + 1e-5), rtol=1e-6)


def test_weighted_accuracy_matches_keras_argmax():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 6, 50)).astype("float32")
    labels = np.argmax(logits, -1).astype("int32")
    labels[:, ::2] = (labels[:, ::2] + 1) % 50  # every other position wrong
    weights = rng.integers(0, 2, (4, 6)).astype("float32")
    metric = losses.WeightedAccuracy()
    metric.update_state(labels, logits, weights)
    hits = (np.argmax(logits, -1) == labels).astype("float32")
    assert float(metric.result()) == pytest.approx(float((hits * weights).sum() / weights.sum()))
    assert losses._argmax_last(tf.constant(logits)).dtype == tf.int32
