"""Optimizers and schedule: hand-computed updates, exclusions, accumulation equivalence."""

import keras
import numpy as np
import pytest

from keras_bert import checkpoints, optimization
from keras_bert.config import BertConfig


def _dense_and_norm():
    """A Dense ("dense/kernel", "dense/bias") and a LayerNorm ("layer_norm/gamma", ...)."""
    inputs = keras.Input((2,))
    dense = keras.layers.Dense(2, name="dense")
    norm = keras.layers.LayerNormalization(name="layer_norm")
    keras.Model(inputs, norm(dense(inputs)))
    dense.kernel.assign(np.array([[0.5, -1.0], [2.0, 0.25]], np.float32))
    dense.bias.assign(np.array([0.1, -0.2], np.float32))
    norm.gamma.assign(np.array([1.5, 0.5], np.float32))
    norm.beta.assign(np.array([0.3, -0.3], np.float32))
    return [dense.kernel, dense.bias, norm.gamma, norm.beta]


def _reference_adam_wd(w, grads, lr, wd, decay, eps=1e-6, b1=0.9, b2=0.999):
    """The original AdamWeightDecayOptimizer in numpy (no bias correction)."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        update = m / (np.sqrt(v) + eps)
        if decay:
            update = update + wd * w
        w = w - lr * update
    return w


def test_adam_weight_decay_matches_original_and_skips_layer_norm_and_bias():
    variables = _dense_and_norm()
    start = [v.numpy().copy() for v in variables]
    rng = np.random.default_rng(0)
    grads = [[rng.normal(size=v.shape).astype(np.float32) * 0.1 for v in variables]
             for _ in range(2)]
    lr, wd = 0.1, 0.5  # a large decay so that a wrongly decayed variable shows
    opt = optimization.AdamWeightDecay(lr, weight_decay_rate=wd, global_clipnorm=None)
    for step_grads in grads:
        opt.apply(step_grads, variables)
    decayed = {"dense/kernel"}
    for i, v in enumerate(variables):
        expected = _reference_adam_wd(start[i], [g[i] for g in grads], lr, wd,
                                      decay=v.path in decayed)
        # The fused kernel forms 1 - beta_2 in float32 (0.0010000467, not 0.001):
        # the first steps are 2.3e-5 (relative) off the float64 reference.
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-4, atol=1e-5, err_msg=v.path)
        assert opt.uses_weight_decay(v) == (v.path in decayed)


def test_decayed_variables_of_the_bert_model_are_the_originals():
    """Decayed iff the original would: not LayerNorm, not any bias (incl. the MLM output bias)."""
    model = checkpoints.build_model(BertConfig.preset("tiny", vocab_size=30), "pretraining")
    opt = optimization.AdamWeightDecay()
    names = checkpoints.model_variables(model)
    assert len(names) == len(model.trainable_variables)
    for canonical, variable, _ in names:
        original_decays = "LayerNorm" not in canonical and not canonical.endswith("bias")
        assert opt.uses_weight_decay(variable) == original_decays, canonical


def test_global_norm_clipping():
    opt = optimization.AdamWeightDecay(global_clipnorm=1.0)
    grads = [np.full((3,), 2.0, np.float32), np.full((4,), -2.0, np.float32)]  # norm sqrt(28)
    clipped = opt._clip_gradients(grads)
    norm = np.sqrt(sum(float(np.sum(np.square(np.asarray(g)))) for g in clipped))
    assert norm == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(np.asarray(clipped[0]), 2.0 / np.sqrt(28.0), rtol=1e-5)


@pytest.mark.parametrize("step, expected", [
    (0, 0.0), (50, 5e-5), (99, 9.9e-5), (100, 9e-5), (550, 4.5e-5), (1000, 0.0), (5000, 0.0)])
def test_schedule_linear(step, expected):
    schedule = optimization.WarmupPolynomialDecay(1e-4, decay_steps=1000, warmup_steps=100)
    assert float(schedule(step)) == pytest.approx(expected, abs=1e-10)


def test_schedule_polynomial_end_rate_and_round_trip():
    schedule = optimization.WarmupPolynomialDecay(1.0, decay_steps=100, warmup_steps=0,
                                                  end_learning_rate=0.1, power=2.0)
    # (1 - 0.1) * (1 - 50/100)^2 + 0.1
    assert float(schedule(50)) == pytest.approx(0.325, rel=1e-6)
    assert float(schedule(0)) == pytest.approx(1.0)
    assert float(schedule(200)) == pytest.approx(0.1)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored.get_config() == schedule.get_config()
    opt = optimization.create_optimizer("lamb", 1e-3, 1000, 100, gradient_accumulation_steps=4)
    again = optimization.Lamb.from_config(opt.get_config())
    assert again.get_config() == opt.get_config()
    assert again.gradient_accumulation_steps == 4


def test_lamb_trust_ratio_hand_computed():
    variables = _dense_and_norm()
    kernel, bias = variables[0], variables[1]
    kernel.assign(np.array([[3.0, 4.0], [0.0, 0.0]], np.float32))  # ||w|| = 5
    g_kernel = np.array([[1.0, -2.0], [0.5, 0.0]], np.float32)
    g_bias = np.array([0.4, -0.1], np.float32)
    zeros = [np.zeros(v.shape, np.float32) for v in variables[2:]]
    lr, wd, eps = 0.01, 0.01, 1e-6
    opt = optimization.Lamb(lr, weight_decay_rate=wd, epsilon=eps, global_clipnorm=None)
    w0 = kernel.numpy().copy()
    b0 = bias.numpy().copy()
    opt.apply([g_kernel, g_bias] + zeros, variables)
    # Step 1: m_hat = g and v_hat = g^2, so the Adam direction is g / (|g| + eps).
    direction = g_kernel / (np.abs(g_kernel) + eps)
    u = direction + wd * w0  # [[1.03, -0.96], [1.0, 0.0]] up to eps
    ratio = 5.0 / np.linalg.norm(u)  # ||w|| / ||u|| = 5 / sqrt(1.03^2 + 0.96^2 + 1)
    assert ratio == pytest.approx(5.0 / np.sqrt(1.03 ** 2 + 0.96 ** 2 + 1.0), rel=1e-5)
    np.testing.assert_allclose(kernel.numpy(), w0 - lr * ratio * u, rtol=1e-6)
    # Biases: no decay and no trust ratio.
    np.testing.assert_allclose(bias.numpy(), b0 - lr * g_bias / (np.abs(g_bias) + eps), rtol=1e-6)
    assert not opt.uses_layer_adaptation(bias) and opt.uses_layer_adaptation(kernel)


def test_lamb_zero_weights_use_ratio_one():
    variables = _dense_and_norm()
    kernel = variables[0]
    kernel.assign(np.zeros((2, 2), np.float32))
    grads = [np.ones((2, 2), np.float32)] + [np.zeros(v.shape, np.float32) for v in variables[1:]]
    opt = optimization.Lamb(0.01, global_clipnorm=None)
    opt.apply(grads, variables)
    np.testing.assert_allclose(kernel.numpy(), -0.01 * np.ones((2, 2)), rtol=1e-5)


def _tiny_batch(n, seed=0, vocab=50, seq=12, preds=3):
    rng = np.random.default_rng(seed)
    x = {"input_ids": rng.integers(5, vocab, (n, seq)).astype("int32"),
         "segment_ids": (np.arange(seq)[None, :] >= seq // 2).repeat(n, 0).astype("int32"),
         "input_mask": np.ones((n, seq), "int32"),
         "masked_lm_positions": np.stack([rng.choice(np.arange(1, seq), preds, replace=False)
                                          for _ in range(n)]).astype("int32")}
    # Equal prediction counts per example, so a mean of micro-batch losses is the
    # big-batch loss exactly.
    y = {"masked_lm_ids": rng.integers(5, vocab, (n, preds)).astype("int32"),
         "masked_lm_weights": np.ones((n, preds), "float32"),
         "next_sentence_labels": rng.integers(0, 2, (n, 1)).astype("int32")}
    return x, y


@pytest.mark.parametrize("name", ["adamw", "adam_weight_decay", "lamb"])
def test_gradient_accumulation_equals_big_batch(name):
    config = BertConfig.preset("tiny", vocab_size=50, num_hidden_layers=1, hidden_size=32,
                               num_attention_heads=2, intermediate_size=64,
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    keras.utils.set_random_seed(1)
    big = checkpoints.build_model(config, "pretraining")
    small = checkpoints.build_model(config, "pretraining")
    small.set_weights(big.get_weights())
    initial = [w.copy() for w in big.get_weights()]

    def make(accumulation):
        # epsilon=1 makes the step scale-sensitive (nearly SGD with momentum), so a sum
        # of micro-batch gradients instead of their mean would show.
        opt = optimization.create_optimizer(name, 1.0, num_train_steps=10, num_warmup_steps=4,
                                            gradient_accumulation_steps=accumulation,
                                            epsilon=1.0, global_clipnorm=None)
        return opt

    big.compile(optimizer=make(None))
    small.compile(optimizer=make(4))
    x, y = _tiny_batch(32)
    big.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    small.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    assert int(big.optimizer.iterations) == int(small.optimizer.iterations) == 3
    assert int(small.optimizer._iterations) == 12
    # The schedule advances per update: step 3 of a 4-step warm-up.
    assert float(small.optimizer.learning_rate) == pytest.approx(0.75)
    assert float(big.optimizer.learning_rate) == pytest.approx(0.75)
    # Float32 sums in another order (and oneDNN kernels for another batch size)
    # differ by ~1e-7, which three steps at learning rate 1 amplify to ~0.3% of the
    # distance travelled; summing instead of averaging the micro-batch gradients
    # gives ~75%.
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(big.get_weights(), initial))
    differ = max(float(np.max(np.abs(a - b)))
                 for a, b in zip(big.get_weights(), small.get_weights()))
    assert moved > 1e-2
    assert differ < 0.01 * moved


@pytest.mark.parametrize("name", ["adamw", "adam_weight_decay", "lamb"])
def test_sparse_gradients_with_repeated_rows_update_as_dense_ones(name):
    """An embedding row gathered k times gets the update of its summed gradient.

    TensorFlow gives the gradient of a gathered table as one slice per occurrence;
    squaring slices one by one (as `keras.ops.square` does) made Adam's second moment
    the sum of squares, i.e. steps up to sqrt(k) times too large for frequent rows.
    """
    import tensorflow as tf

    def step(sparse):
        table = keras.Variable(np.linspace(-1.0, 1.0, 12, dtype="float32").reshape(4, 3))
        opt = optimization.create_optimizer(name, 0.1, num_train_steps=10, num_warmup_steps=0)
        for _ in range(3):
            with tf.GradientTape() as tape:
                rows = tf.gather(table, [0, 0, 0, 2, 0])  # row 0 four times
                loss = tf.reduce_sum(rows * tf.constant([1.0, -2.0, 0.5]))
            grad = tape.gradient(loss, table)
            assert isinstance(grad, tf.IndexedSlices)
            opt.apply_gradients([(grad if sparse else tf.convert_to_tensor(grad), table)])
        return table.numpy()

    np.testing.assert_allclose(step(sparse=True), step(sparse=False), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fused", [True, False])
def test_adamw_is_bias_corrected_and_adam_weight_decay_is_not(fused):
    """First update of a weight with gradient g: AdamW moves lr * g / (|g| + eps)
    (+ decay); the original moves (1 - b1) / sqrt(1 - b2) = 3.16 times that. A
    gradient near epsilon (1e-6) shows where epsilon enters, fused or not."""
    moved = {}
    for name in ("adamw", "adam_weight_decay"):
        w = keras.Variable(np.array([1.0, -1.0, 0.5], "float32"))
        opt = optimization.create_optimizer(name, 0.01, num_train_steps=100, num_warmup_steps=0,
                                            weight_decay_rate=0.0, global_clipnorm=None)
        opt.fused = fused
        opt.apply_gradients([(np.array([0.3, -0.002, 1e-6], "float32"), w)])
        moved[name] = np.array([1.0, -1.0, 0.5]) - w.numpy()
    g, eps = np.array([0.3, -0.002, 1e-6]), 1e-6
    np.testing.assert_allclose(moved["adamw"], 0.01 * g / (np.abs(g) + eps), rtol=1e-4)
    np.testing.assert_allclose(moved["adam_weight_decay"],
                               0.01 * 0.1 * g / (np.sqrt(0.001) * np.abs(g) + eps), rtol=1e-4)


def test_decay_after_warmup_is_hugging_faces_linear_schedule():
    """`get_linear_schedule_with_warmup`: peak * s / w during warm-up, then
    peak * (T - s) / (T - w); the original instead decays from step 0."""
    peak, warmup, total = 1e-3, 10, 110
    hf = optimization.WarmupPolynomialDecay(peak, total, warmup, decay_after_warmup=True)
    original = optimization.WarmupPolynomialDecay(peak, total, warmup)
    for step in (0, 5, 10, 11, 60, 109, 110, 150):
        expected = peak * step / warmup if step < warmup else peak * max(0, total - step) / (total - warmup)
        assert float(hf(step)) == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert float(original(10)) == pytest.approx(peak * 100 / 110)  # 9% below the peak
    config = hf.get_config()
    assert optimization.WarmupPolynomialDecay.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="below decay_steps"):
        optimization.WarmupPolynomialDecay(peak, 10, 10, decay_after_warmup=True)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_fused_kernel_update_equals_the_op_by_op_update(bias_correction):
    """TensorFlow's fused Adam kernel (the default) gives the op-by-op update's weights.

    Six steps of a small BERT classifier's real gradients (warm-up, decayed and
    excluded variables, the sparse word-embedding gradient with repeated rows,
    clipping), with and without bias correction. Both optimizers get the same
    gradients each step, so only the update arithmetic is compared.
    """
    import tensorflow as tf

    config = BertConfig.preset("tiny", vocab_size=60, max_position_embeddings=16)
    rng = np.random.default_rng(3)
    x = {"input_ids": rng.integers(0, 12, (4, 8)).astype("int32"),  # frequent rows
         "segment_ids": rng.integers(0, 2, (4, 8)).astype("int32"),
         "input_mask": np.ones((4, 8), "int32")}
    y = rng.integers(0, 3, (4,))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(0)
    model = checkpoints.build_model(config, "classifier", num_classes=3, dropout=0.0)
    schedule = optimization.WarmupPolynomialDecay(1e-2, 6, 2)
    op_by_op = optimization.AdamWeightDecay(schedule, bias_correction=bias_correction,
                                            fused=False)
    fused = optimization.AdamWeightDecay(schedule, bias_correction=bias_correction)
    sparse = 0
    for step in range(6):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=False)["logits"])
        grads = tape.gradient(loss, model.trainable_variables)
        sparse += sum(isinstance(g, tf.IndexedSlices) for g in grads)
        before = model.get_weights()
        op_by_op.apply(grads, model.trainable_variables)
        expected = model.get_weights()
        model.set_weights(before)
        fused.apply(grads, model.trainable_variables)
        for variable, want in zip(model.trainable_variables, expected[:len(before)]):
            # Steps are up to 1e-2; the kernel rounds in another order (a few float32
            # ulps of the step), so 3e-7 is 0.003% of the largest step.
            np.testing.assert_allclose(variable.numpy(), want, rtol=1e-5, atol=3e-7,
                                       err_msg=f"step {step}: {variable.path}")
        model.set_weights(expected)
    assert sparse


def test_fused_flag_round_trips_and_other_dtypes_fall_back():
    opt = optimization.AdamWeightDecay(1e-3, fused=False)
    assert optimization.AdamWeightDecay.from_config(opt.get_config()).fused is False
    assert optimization.create_optimizer("adamw", 1e-3, 10).fused is True
    assert not optimization._fusable(keras.Variable(np.zeros(2, "int32"), trainable=False))
