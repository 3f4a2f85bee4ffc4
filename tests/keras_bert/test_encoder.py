"""Encoder, heads and config: shapes, serialization, backends, mixed precision, training."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_bert import heads, layers
from keras_bert.config import PRESETS, BertConfig, ConfigError, resolve_config
from keras_bert.encoder import BertEncoder

SMALL = BertConfig.preset("tiny", vocab_size=100, max_position_embeddings=32)


def _batch(batch=2, seq=12, vocab=100, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (batch, seq)).astype("int32")
    mask = np.ones_like(ids)
    mask[1:, seq - 3:] = 0
    return {"input_ids": ids, "segment_ids": np.zeros_like(ids), "input_mask": mask}


def test_presets_cover_the_compact_models():
    compact = [f"l{l}_h{h}" for l in (2, 4, 6, 8, 10, 12) for h in (128, 256, 512, 768)]
    assert all(name in PRESETS for name in compact)
    cfg = BertConfig.preset("L4_H256")
    assert (cfg.num_attention_heads, cfg.intermediate_size) == (4, 1024)
    assert BertConfig.preset("mini") == cfg
    assert BertConfig.preset("base").num_hidden_layers == 12
    large = BertConfig.preset("large")
    assert (large.hidden_size, large.num_attention_heads, large.num_hidden_layers) == (1024, 16, 24)


def test_config_json_round_trip_and_errors(tmp_path):
    path = str(tmp_path / "bert_config.json")
    SMALL.to_json_file(path)
    assert BertConfig.from_json_file(path) == SMALL
    assert resolve_config(path) == SMALL
    (tmp_path / "bad.json").write_text(json.dumps({"hidden_size": 30, "vocab_size": 10,
                                                   "num_hidden_layers": 1,
                                                   "num_attention_heads": 4,
                                                   "intermediate_size": 8}))
    with pytest.raises(ConfigError, match="bad.json.*divisible"):
        BertConfig.from_json_file(str(tmp_path / "bad.json"))
    (tmp_path / "partial.json").write_text(json.dumps({"hidden_size": 32}))
    with pytest.raises(ConfigError, match="partial.json.*vocab_size"):
        BertConfig.from_json_file(str(tmp_path / "partial.json"))
    with pytest.raises(ConfigError, match="unknown BertConfig preset"):
        BertConfig.preset("huge")


def test_encoder_outputs_and_config_round_trip():
    encoder = BertEncoder.from_bert_config(SMALL, output_hidden_states=True)
    out = encoder(_batch())
    assert out["sequence_output"].shape == (2, 12, 128)
    assert out["pooled_output"].shape == (2, 128)
    assert len(out["hidden_states"]) == SMALL.num_hidden_layers + 1
    assert encoder.bert_config == SMALL
    clone = BertEncoder.from_config(encoder.get_config())
    clone.set_weights(encoder.get_weights())
    np.testing.assert_allclose(clone(_batch())["pooled_output"], out["pooled_output"], atol=1e-6)


@pytest.mark.parametrize("layer", [
    layers.TransformerLayer(32, 4, 64, "gelu_new", 0.2, 0.3, 0.05, 1e-6, name="t"),
    layers.SelfAttention(32, 4, 0.2, 0.05, name="a"),
    layers.PositionAndSegmentEmbedding(16, 3, 32, 0.05, 1e-6, 0.2, name="p"),
    layers.Pooler(32, 0.05, name="pool"),
    layers.MaskedLMHead(50, 32, "relu", 0.05, 1e-6, name="m"),
    layers.TokenEmbedding(50, 32, name="tok"),
])
def test_layer_configs_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


def test_task_models_save_and_load(tmp_path):
    encoder = BertEncoder.from_bert_config(SMALL)
    x = _batch()
    models = {
        "clf": (heads.BertClassifier(encoder, num_classes=3), x),
        "tok": (heads.BertTokenClassifier(encoder, num_classes=5), x),
        "qa": (heads.BertSpanQA(encoder), x),
        "mc": (heads.BertMultipleChoice(encoder, num_choices=2),
               {k: np.stack([v, v], 1) for k, v in x.items()}),
        "pt": (heads.BertPretrainingModel(encoder),
               {**x, "masked_lm_positions": np.array([[1, 2], [3, 4]], "int32")}),
    }
    expected_shapes = {"clf": {"logits": (2, 3)}, "tok": {"logits": (2, 12, 5)},
                       "qa": {"start_logits": (2, 12), "end_logits": (2, 12)},
                       "mc": {"logits": (2, 2)},
                       "pt": {"mlm_logits": (2, 2, 100), "nsp_logits": (2, 2)}}
    for name, (model, inputs) in models.items():
        out = model(inputs)
        assert {k: tuple(v.shape) for k, v in out.items()} == expected_shapes[name]
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        for key in out:
            np.testing.assert_allclose(loaded(inputs)[key], out[key], atol=1e-5, err_msg=name)


def test_mlm_decoder_is_tied_to_word_embeddings():
    encoder = BertEncoder.from_bert_config(SMALL)
    model = heads.BertPretrainingModel(encoder)
    shared = [w for w in model.mlm_head.weights if "embeddings" in w.path]
    assert shared and all(w is encoder.token_embedding.embeddings for w in shared)
    # The decoder adds only transform, LayerNorm and output bias: no second table.
    head_only = [w for w in model.weights if not any(w is e for e in encoder.weights)]
    assert sum(int(np.prod(w.shape)) for w in head_only) == (
        128 * 128 + 128 + 2 * 128 + 100 + 128 * 2 + 2)
    x = {**_batch(), "masked_lm_positions": np.array([[1, 2], [3, 4]], "int32")}
    before = np.asarray(model(x)["mlm_logits"])
    table = encoder.token_embedding.embeddings
    table.assign(table.numpy() * 2.0)
    assert not np.allclose(before, np.asarray(model(x)["mlm_logits"]))


def test_mixed_bfloat16_keeps_float32_logits_and_tracks_float32():
    encoder = BertEncoder.from_bert_config(SMALL, dtype="mixed_bfloat16")
    ref = BertEncoder.from_bert_config(SMALL)
    ref.set_weights(encoder.get_weights())
    model = heads.BertPretrainingModel(encoder)
    x = {**_batch(), "masked_lm_positions": np.array([[1, 2], [3, 4]], "int32")}
    out = model(x)
    assert out["mlm_logits"].dtype == "float32" and out["nsp_logits"].dtype == "float32"
    assert all(w.dtype == "float32" for w in encoder.weights)
    seq = encoder(_batch())["sequence_output"]
    assert seq.dtype == "bfloat16"
    # bfloat16 has ~3 significant digits; LayerNorm outputs are O(1).
    diff = np.abs(np.asarray(seq, "float32") - np.asarray(ref(_batch())["sequence_output"]))
    assert diff.max() < 0.15


def test_pretraining_fit_reduces_loss_and_reports_metrics():
    keras.utils.set_random_seed(3)
    encoder = BertEncoder.from_bert_config(SMALL.replace(hidden_dropout_prob=0.0,
                                                         attention_probs_dropout_prob=0.0))
    model = heads.BertPretrainingModel(encoder)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, (16, 12)).astype("int32")
    x = {"input_ids": ids, "segment_ids": np.zeros_like(ids), "input_mask": np.ones_like(ids),
         "masked_lm_positions": np.tile(np.array([1, 5, 9], "int32"), (16, 1))}
    y = {"masked_lm_ids": ids[:, [1, 5, 9]], "masked_lm_weights": np.ones((16, 3), "float32"),
         "next_sentence_labels": (np.arange(16) % 2)[:, None]}
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    hist = model.fit(x, y, epochs=25, batch_size=8, verbose=0).history
    assert {"loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"} <= set(hist)
    assert hist["mlm_loss"][-1] < 0.5 * hist["mlm_loss"][0]
    assert hist["mlm_accuracy"][-1] > 0.5


@pytest.mark.slow
def test_forward_pass_on_jax_backend_matches_tensorflow(tmp_path):
    """The same weights give the same outputs on the JAX backend (run in a subprocess)."""
    encoder = BertEncoder.from_bert_config(SMALL)
    x = _batch()
    expected = np.asarray(encoder(x)["pooled_output"])
    weights = str(tmp_path / "enc.weights.h5")
    encoder.save_weights(weights)
    np.savez(str(tmp_path / "x.npz"), **x)
    script = f"""
import numpy as np, keras
assert keras.backend.backend() == "jax"
from keras_bert.encoder import BertEncoder
from keras_bert.config import BertConfig
enc = BertEncoder.from_bert_config(BertConfig(**{SMALL.to_dict()!r}))
enc.load_weights({weights!r})
x = dict(np.load({str(tmp_path / 'x.npz')!r}))
np.save({str(tmp_path / 'out.npy')!r}, np.asarray(enc(x)["pooled_output"]))
"""
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(str(tmp_path / "out.npy")), expected, atol=1e-4)


@pytest.mark.slow
def test_pretraining_loss_is_scaled_per_replica():
    """Under a 2-replica MirroredStrategy one SGD step moves weights as far as on 1 device."""
    script = os.path.join(os.path.dirname(__file__), "_replica_scaling_script.py")
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ratio = float(proc.stdout.strip().split()[-1])
    assert abs(ratio - 1.0) < 1e-3, ratio


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gelu_values_and_gradient_are_the_exact_erf_gelus(dtype):
    """`layers.gelu` (custom gradient, float32 inside) against TensorFlow's own exact
    GELU and its autodiff gradient, including the tails."""
    import tensorflow as tf

    from keras_bert import layers

    x32 = tf.constant(np.linspace(-9.0, 9.0, 1001), tf.float32)
    x = tf.cast(x32, dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        tape.watch(x32)
        ours = layers.gelu(x)
        reference = tf.nn.gelu(x32, approximate=False)
    assert ours.dtype == x.dtype
    grad = tape.gradient(ours, x, output_gradients=tf.ones_like(ours))
    grad_reference = tape.gradient(reference, x32)
    # float32 agrees to rounding; bfloat16 is the float32 result rounded once.
    tol = {"float32": 1e-6, "bfloat16": 8e-3}[dtype]
    np.testing.assert_allclose(tf.cast(ours, tf.float32).numpy(), reference.numpy(),
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(tf.cast(grad, tf.float32).numpy(), grad_reference.numpy(),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dropout_keeps_the_stated_share_unbiased_and_reproducible(dtype):
    """`layers.Dropout`: about 1 - rate kept (binomial bound), kept values scaled so
    the mean is unchanged, identity at inference, and a seed gives the same mask."""
    import tensorflow as tf

    x = tf.ones((64, 129, 33), dtype)  # an odd element count
    n = 64 * 129 * 33
    for rate in (0.1, 0.5):
        layer = layers.Dropout(rate, seed=7, dtype=dtype)
        y = tf.cast(layer(x, training=True), tf.float32).numpy()
        kept = float(np.mean(y > 0))
        keep = 1 - round(rate * 65536) / 65536
        assert abs(kept - keep) < 5 * np.sqrt(keep * (1 - keep) / n)
        assert set(np.unique(y)) <= {0.0, float(tf.cast(1 / keep, dtype))}
        assert abs(float(np.mean(y)) - 1.0) < 5 * np.sqrt((1 - keep) / keep / n) + 4e-3
        np.testing.assert_array_equal(layer(x, training=False), x)
        again = tf.cast(layers.Dropout(rate, seed=7, dtype=dtype)(x, training=True), tf.float32)
        np.testing.assert_array_equal(again.numpy(), y)
        other = tf.cast(layer(x, training=True), tf.float32).numpy()  # the next draw
        assert np.mean((other > 0) != (y > 0)) > rate * (1 - rate)  # independent: 2p(1-p)


def _dense_pair(policy, units=5, inputs=7):
    """`layers.Dense` and `keras.layers.Dense` with the same float32 weights."""
    ours = layers.Dense(units, dtype=policy)
    stock = keras.layers.Dense(units, dtype=policy)
    for layer in (ours, stock):
        layer.build((None, None, inputs))
    rng = np.random.default_rng(3)
    weights = [rng.normal(size=(inputs, units)).astype("float32"),
               rng.normal(size=(units,)).astype("float32")]
    ours.set_weights(weights)
    stock.set_weights(weights)
    return ours, stock


def _bias_and_kernel_grads(layer, x, upstream):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    return y, tape.gradient(loss, [layer.bias, layer.kernel])


def test_dense_bias_gradient_is_summed_in_float32_under_mixed_bfloat16():
    """A bias gradient of 8,192 rows of ones is 8,192 (summing bfloat16 in bfloat16
    stops at 256); random rows match a float64 sum to the rounding of the result;
    forward values and the kernel gradient are `keras.layers.Dense`'s."""
    import tensorflow as tf

    ours, stock = _dense_pair("mixed_bfloat16")
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 2048, 7)), tf.float32)
    y, (bias_grad, kernel_grad) = _bias_and_kernel_grads(ours, x, tf.ones((4, 2048, 5)))
    assert y.dtype == tf.bfloat16
    np.testing.assert_array_equal(bias_grad.numpy(), np.full(5, 8192.0, np.float32))

    upstream = tf.constant(np.random.default_rng(1).normal(size=(4, 2048, 5)), tf.float32)
    y, (bias_grad, kernel_grad) = _bias_and_kernel_grads(ours, x, upstream)
    y_stock, (_, kernel_grad_stock) = _bias_and_kernel_grads(stock, x, upstream)
    np.testing.assert_array_equal(tf.cast(y, tf.float32).numpy(), tf.cast(y_stock, tf.float32).numpy())
    np.testing.assert_array_equal(kernel_grad.numpy(), kernel_grad_stock.numpy())
    # What reaches the bias is the upstream gradient rounded to bfloat16.
    rounded = tf.cast(tf.cast(upstream, tf.bfloat16), tf.float64).numpy()
    exact = rounded.reshape(-1, 5).sum(axis=0)
    np.testing.assert_allclose(bias_grad.numpy(), exact, rtol=2.0 ** -8)


def test_dense_is_keras_dense_in_float32_and_round_trips_its_config():
    import tensorflow as tf

    ours, stock = _dense_pair(None)
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 11, 7)), tf.float32)
    upstream = tf.constant(np.random.default_rng(1).normal(size=(3, 11, 5)), tf.float32)
    y, grads = _bias_and_kernel_grads(ours, x, upstream)
    y_stock, grads_stock = _bias_and_kernel_grads(stock, x, upstream)
    np.testing.assert_array_equal(y.numpy(), y_stock.numpy())
    for g, g_stock in zip(grads, grads_stock):
        np.testing.assert_array_equal(g.numpy(), g_stock.numpy())
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours))
    assert type(again) is layers.Dense and again.units == 5


def _no_dropout_encoder(policy=None):
    config = BertConfig.preset("tiny", vocab_size=100, max_position_embeddings=32,
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    keras.utils.set_random_seed(5)
    return BertEncoder.from_bert_config(config, dtype=policy)


def _padded_batch():
    batch = _batch(batch=3, seq=12)
    batch["input_mask"][0, 5:] = 0  # rows of 5, 12 and 9 real tokens
    batch["input_mask"][2, 9:] = 0
    batch["segment_ids"][1, 6:] = 1
    return batch


def _training_outputs_and_grads(encoder, batch, jit_compile=False):
    import tensorflow as tf

    mask = tf.constant(batch["input_mask"], tf.float32)[:, :, None]
    weights = tf.constant(np.random.default_rng(2).normal(size=(3, 12, encoder.hidden_size)),
                          tf.float32)

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            out = encoder(batch, training=True)
            seq = tf.cast(out["sequence_output"], tf.float32)
            # A loss that reads real positions only, as every loss but span QA's does.
            loss = tf.reduce_sum(seq * weights * mask) + tf.reduce_sum(
                tf.cast(out["pooled_output"], tf.float32))
        return seq, tape.gradient(loss, encoder.trainable_variables)

    seq, grads = step()
    return seq.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]


@pytest.mark.parametrize("policy, tol", [(None, 2e-5), ("mixed_bfloat16", 3e-2)])
def test_training_on_real_tokens_only_gives_the_padded_step_values_and_gradients(policy, tol):
    """`skip_padding` (the default in training) against the padded computation:
    the same outputs at real positions, zeros at padded ones, the same gradient of
    every weight."""
    encoder = _no_dropout_encoder(policy)
    batch = _padded_batch()
    assert encoder.skip_padding
    seq, grads = _training_outputs_and_grads(encoder, batch)
    encoder.skip_padding = False
    seq_padded, grads_padded = _training_outputs_and_grads(encoder, batch)
    real = batch["input_mask"].astype(bool)
    np.testing.assert_allclose(seq[real], seq_padded[real], rtol=tol, atol=tol)
    assert np.all(seq[~real] == 0.0) and np.all(seq_padded[~real] != 0.0)
    assert len(grads) == len(grads_padded) == len(encoder.trainable_variables)
    for variable, g, g_padded in zip(encoder.trainable_variables, grads, grads_padded):
        scale = max(1.0, float(np.abs(g_padded).max()))
        np.testing.assert_allclose(g, g_padded, rtol=tol, atol=tol * scale, err_msg=variable.path)


def test_skip_padding_steps_aside_under_xla_and_for_span_qa():
    """An XLA-compiled step (no data-dependent shapes) computes every position;
    `BertSpanQA`, whose loss reads padded positions, turns it off."""
    encoder = _no_dropout_encoder()
    batch = _padded_batch()
    seq_xla, _ = _training_outputs_and_grads(encoder, batch, jit_compile=True)
    encoder.skip_padding = False
    seq_padded, _ = _training_outputs_and_grads(encoder, batch)
    np.testing.assert_allclose(seq_xla, seq_padded, rtol=1e-4, atol=1e-4)  # pads included
    encoder.skip_padding = True
    heads.BertSpanQA(encoder)
    assert not encoder.skip_padding


def test_a_batch_with_little_padding_takes_the_padded_path():
    """At most an eighth padding: the layers compute every position (gathering would
    cost more than it saves), so padded positions are not zeroed."""
    encoder = _no_dropout_encoder()
    batch = _padded_batch()
    batch["input_mask"][:] = 1
    batch["input_mask"][0, 8:] = 0  # 4 of 36 positions
    seq, _ = _training_outputs_and_grads(encoder, batch)
    assert np.all(seq[0, 8:] != 0.0)
    batch["input_mask"][1, 8:] = 0  # 8 of 36: more than an eighth
    seq, _ = _training_outputs_and_grads(encoder, batch)
    assert np.all(seq[0, 8:] == 0.0) and np.all(seq[1, 8:] == 0.0)


def _random_weights(model, seed=1):
    """Non-trivial weights (biases, LayerNorm gammas and betas away from 0 and 1), so that
    no optimizer rewrite can drop an add of zeros or a product with ones."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.standard_normal(w.shape) * 0.05 + (1.0 if "gamma" in w.path else 0.0)
        w.assign(value.astype("float32"))


def _optimized_ops(fn, inputs):
    """Op types of `fn`'s graph as TensorFlow runs it, after its graph optimizer."""
    import collections

    import tensorflow as tf

    graph_def = fn.graph.as_graph_def()
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        feeds = {graph.get_tensor_by_name(t.name): inputs[t.name.split(":")[0]]
                 for t in fn.inputs}
        fetch = graph.get_tensor_by_name(fn.outputs[0].name)
        with tf.compat.v1.Session(graph=graph) as session:
            metadata = tf.compat.v1.RunMetadata()
            session.run(fetch, feeds, run_metadata=metadata,
                        options=tf.compat.v1.RunOptions(output_partition_graphs=True))
    ops = collections.Counter()
    for partition in metadata.partition_graphs:
        for node in partition.node:
            ops[node.op] += 1
            if node.op == "_MklNativeFusedMatMul":
                ops["fused:" + ",".join(s.decode() for s in node.attr["fused_ops"].list.s)] += 1
    return ops


def _frozen_sequence_output(encoder, fused):
    """The frozen encoder's `sequence_output` function, traced with or without fusion."""
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    spec = {name: tf.TensorSpec([None, None], tf.int32, name=name)
            for name in ("input_ids", "segment_ids", "input_mask")}
    original = layers._fusable_inference
    if not fused:
        layers._fusable_inference = lambda dtype: False
    try:
        with layers.inference_graph():
            traced = tf.function(
                lambda x: encoder(x, training=False)["sequence_output"]).get_concrete_function(spec)
    finally:
        layers._fusable_inference = original
    return convert_to_constants.convert_variables_to_constants_v2(traced)


@pytest.mark.skipif(not layers.onednn_enabled(), reason="the fused kernels are oneDNN's")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "mixed_bfloat16"])
def test_frozen_inference_fuses_every_layer_into_onednn_kernels(dtype):
    """Each layer's six projections become fused matmuls (the feed-forward one with its
    GELU, the two output ones with their residual) and its two LayerNorms one kernel
    each; the op names sort in the patterns' input order, which the optimizer needs."""
    encoder = BertEncoder.from_bert_config(SMALL, dtype=dtype)
    _random_weights(encoder)
    ops = _optimized_ops(_frozen_sequence_output(encoder, fused=True), _batch())
    n = SMALL.num_hidden_layers
    assert ops["_MklLayerNorm"] == 2 * n + 1  # and the embeddings'
    assert ops["fused:BiasAdd,GeluExact"] == n
    assert ops["fused:BiasAdd,Add"] == 2 * n
    assert ops["fused:BiasAdd"] >= 3 * n  # query, key, value (and the pooler's)
    assert ops["Erf"] == ops["Erfc"] == ops["SquaredDifference"] == 0
    unfused = _optimized_ops(_frozen_sequence_output(encoder, fused=False), _batch())
    assert unfused["_MklLayerNorm"] == 0 and unfused["SquaredDifference"] >= 2 * n


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_inference_gives_the_encoders_values(dtype):
    """float32: the fused frozen encoder equals the Keras forward pass to float rounding
    (so the fused LayerNorm keeps BERT's epsilon of 1e-12, not the kernel's own 1e-3);
    bfloat16: it is at least as close to the float32 values as the unfused export."""
    import tensorflow as tf

    batch = _batch(batch=3, seq=16)
    reference = BertEncoder.from_bert_config(SMALL)
    _random_weights(reference)
    expected = reference(batch, training=False)["sequence_output"].numpy()
    real = batch["input_mask"].astype(bool)
    if dtype == "float32":
        got = _frozen_sequence_output(reference, fused=True)(**{
            k: tf.constant(v) for k, v in batch.items()})[0].numpy()
        np.testing.assert_allclose(got[real], expected[real], atol=2e-5)
        return
    encoder = BertEncoder.from_bert_config(SMALL, dtype="bfloat16")
    _random_weights(encoder)
    errors = {}
    for fused in (True, False):
        got = _frozen_sequence_output(encoder, fused)(**{
            k: tf.constant(v) for k, v in batch.items()})[0]
        errors[fused] = np.abs(tf.cast(got, tf.float32).numpy()[real] - expected[real])
    assert errors[True].max() < 0.15 and errors[True].mean() < 0.02
    assert errors[True].mean() <= 1.1 * errors[False].mean()


def test_fused_layer_norm_keeps_the_layers_epsilon():
    """Scaled by a power of two, the rows' LayerNorm under the fused kernel's fixed
    epsilon is the layer's own; an epsilon above 1e-9 runs as Keras' LayerNorm."""
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((64, 48)) * 0.01 + 3).astype("float32")  # small variance
    for epsilon in (1e-12, 1e-5):
        layer = keras.layers.LayerNormalization(epsilon=epsilon)
        layer.build((None, 48))
        layer.gamma.assign(rng.standard_normal(48).astype("float32"))
        layer.beta.assign(rng.standard_normal(48).astype("float32"))
        traced = tf.function(lambda r: layers._fused_layer_norm(layer, r)).get_concrete_function(
            tf.TensorSpec([None, 48], tf.float32))
        frozen = convert_to_constants.convert_variables_to_constants_v2(traced)
        x = rows.astype("float64")
        mean = x.mean(1, keepdims=True)
        exact = ((x - mean) / np.sqrt(((x - mean) ** 2).mean(1, keepdims=True) + epsilon)
                 * layer.gamma.numpy() + layer.beta.numpy())
        np.testing.assert_allclose(frozen(tf.constant(rows))[0].numpy(), exact, atol=2e-4)
