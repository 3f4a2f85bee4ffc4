"""Keras 3 layers of the BERT encoder, written with `keras.ops` (TensorFlow and JAX).

Every layer keeps one attribute per constructor argument, round-trips through
`get_config()`, forwards `**kwargs` and is registered for serialization.
"""

import contextlib
import math
import threading

import keras
from keras import ops

_PACKAGE = "keras_bert"

# Added to attention scores of padded keys. Finite (not -inf) so a fully padded row
# gives a uniform distribution instead of NaN, and representable in float16.
_MASK_ADDER = -10000.0


def truncated_normal(stddev):
    """The original BERT initializer: truncated normal with the given stddev."""
    return keras.initializers.TruncatedNormal(stddev=stddev)


_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


_INFERENCE = threading.local()


@contextlib.contextmanager
def inference_graph():
    """Within it, layers trace without training-only parts (GELU's custom gradient).

    A graph traced here (e.g. for a frozen export) has no custom-gradient ops, so
    loading it never warns that their gradients were not saved.
    """
    previous = getattr(_INFERENCE, "on", False)
    _INFERENCE.on = True
    try:
        yield
    finally:
        _INFERENCE.on = previous


def _can_skip_padding():
    """Whether a layer may gather the real tokens of a batch: TensorFlow, not under XLA.

    The gathered length changes from batch to batch, which an XLA-compiled step
    (`jit_compile=True`) cannot take.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    return not control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def onednn_enabled():
    """Whether this TensorFlow runs its CPU kernels through oneDNN (the x86 wheels do)."""
    try:  # a private module: a TensorFlow without it is taken to have no oneDNN
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


# The dtypes whose fused kernels exist (float16 would overflow the LayerNorm's scaling).
_FUSABLE_DTYPES = ("float32", "bfloat16")


def _fusable_inference(dtype):
    """Whether layers computing in `dtype` trace oneDNN-fusable patterns: in
    `inference_graph`, TensorFlow with oneDNN, float32 or bfloat16.

    TensorFlow's graph optimizer (its "remapper") rewrites a few op patterns into
    single oneDNN kernels on CPU: MatMul + BiasAdd (+ exact GELU, + a residual
    add) into one fused matmul, and a layer-normalization pattern into one
    `_MklLayerNorm`. Those kernels compute in float32 inside, even on bfloat16
    tensors. The patterns are only emitted where the rewrite will happen, since the
    same ops unfused would round every step to bfloat16. Training keeps its own
    graph (custom gradients, float32 statistics).
    """
    return (getattr(_INFERENCE, "on", False) and keras.backend.backend() == "tensorflow"
            and dtype in _FUSABLE_DTYPES and onednn_enabled())


def _fused_gelu(x):
    """Exact GELU written as the remapper's pattern, so it folds into the matmul before it."""
    import tensorflow as tf

    return 0.5 * x * (1.0 + tf.math.erf(x * _SQRT_HALF))


# The epsilon of TensorFlow's fused `_MklLayerNorm` kernel: the remapper does not copy
# the pattern's own (measured: a pattern with 1e-12 or 0.1 computes with 1e-3).
_FUSED_LAYER_NORM_EPSILON = 1e-3


def _fused_layer_norm(layer, rows):
    """`layer` (a `keras.layers.LayerNormalization`) on (rows, hidden), as the remapper's
    layer-norm pattern, which it replaces with one `_MklLayerNorm` kernel.

    The pattern reduces over axis 1 spelled as 1 (not -1), and takes gamma and
    beta as constants (a frozen graph). The fused kernel's epsilon is fixed at 1e-3,
    far above BERT's 1e-12, so the rows are first scaled by a power of two `s`
    with `epsilon * s**2` close to 1e-3: a LayerNorm of `s * x` with epsilon
    `epsilon * s**2` is the LayerNorm of `x` with `epsilon`, and a power of two
    scales without rounding. The pattern carries `epsilon * s**2` too, which is
    right if a later TensorFlow reads it. The effective epsilon is then within a
    factor of two of `epsilon`, which changes nothing where epsilon is tiny next
    to any row's variance; a layer with an epsilon above 1e-9 (BERT's is 1e-12)
    runs as Keras' LayerNorm instead.
    """
    import tensorflow as tf

    if layer.epsilon > 1e-9:
        return layer(rows)
    dtype = rows.dtype
    scale_up = 2.0 ** round(0.5 * math.log2(_FUSED_LAYER_NORM_EPSILON / layer.epsilon))
    # The optimizer sorts the inputs of commutative ops by node name before it matches
    # the pattern, so the names below sort in the pattern's own input order.
    with tf.name_scope(layer.name):
        rows = tf.multiply(rows, tf.constant(scale_up, dtype), name="a_input")
        mean = tf.reduce_mean(rows, 1, keepdims=True, name="c_mean")  # (rows, 1)
        variance = tf.reduce_mean(tf.math.squared_difference(rows, mean, name="ca_deviation"),
                                  1, keepdims=True, name="d_variance")
        epsilon = tf.constant(layer.epsilon * scale_up * scale_up, dtype, name="e_epsilon")
        inverse = tf.math.rsqrt(tf.add(variance, epsilon, name="da_variance"), name="0_rsqrt")
        scale = tf.multiply(inverse, tf.cast(layer.gamma, dtype, name="gamma"), name="b_scale")
        shift = tf.subtract(tf.cast(layer.beta, dtype, name="beta"),
                            tf.multiply(scale, mean, name="ba_centre"), name="g_shift")
        return tf.add(tf.multiply(rows, scale, name="f_scaled"), shift, name="h_output")


def _gelu_cdf(x):
    compute = "float64" if keras.backend.standardize_dtype(x.dtype) == "float64" else "float32"
    x32 = ops.cast(x, compute)
    return x32, 0.5 * ops.erfc(x32 * -_SQRT_HALF)


def gelu(x):
    """Exact GELU, `x * Phi(x)`, computed in float32 whatever the input's dtype.

    The same values as `keras.activations.gelu(x, approximate=False)` in float32,
    at about half the cost of a training step's GELU: the forward pass keeps the
    normal CDF, and the gradient is `Phi(x) + x * phi(x)` in three element-wise
    ops instead of differentiating the erf graph op by op. bfloat16 inputs are
    computed in float32 (TensorFlow's bfloat16 erf is scalar code, 2.5x slower than
    the float32 one) and rounded once at the end.
    """
    if getattr(_INFERENCE, "on", False):
        x32, cdf = _gelu_cdf(x)
        return ops.cast(x32 * cdf, x.dtype)
    return _gelu_with_gradient(x)


@ops.custom_gradient
def _gelu_with_gradient(x):
    x32, cdf = _gelu_cdf(x)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        pdf = ops.exp(-0.5 * ops.square(x32)) * _INV_SQRT_2PI
        return ops.cast(ops.cast(upstream, x32.dtype) * (cdf + x32 * pdf), x.dtype)

    return ops.cast(x32 * cdf, x.dtype), grad


def get_activation(name):
    """Maps a `hidden_act` string to a function.

    `gelu` is the exact erf form (Hugging Face's default; see `gelu`); `gelu_new`,
    `gelu_tanh` and `gelu_pytorch_tanh` are the tanh approximation of the original
    TF code.
    """
    name = name.lower()
    if name == "gelu":
        return gelu
    if name in ("gelu_new", "gelu_tanh", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: keras.activations.gelu(x, approximate=True)
    if name == "relu":
        return keras.activations.relu
    if name in ("silu", "swish"):
        return keras.activations.silu
    if name == "tanh":
        return keras.activations.tanh
    raise ValueError(f"unsupported hidden_act {name!r}; use gelu, gelu_new, relu, silu or tanh")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` that draws its mask at half the cost on TensorFlow.

    Keras draws one float32 uniform number per element (`stateless_dropout`); this
    draws 32 random bits per *two* elements and keeps an element when its 16 bits
    are at or above `round(rate * 65536)`, so a training step of BERT spends half as
    long making masks. The kept share is then `1 - round(rate * 65536) / 65536`
    (0.899994 for rate 0.1) and kept values are scaled by its inverse, so the
    expected output is the input exactly. The mask comes from the layer's seed
    generator as Keras' does: a fixed seed gives the same masks run after run.
    Other backends, `noise_shape` and rates of 0 or 1 use `keras.layers.Dropout`.

    Args:
        rate: share of elements dropped, in [0, 1].
        **kwargs: as `keras.layers.Dropout` (`noise_shape`, `seed`, `name`, `dtype`).
    """

    def call(self, inputs, training=False):
        if (not training or not 0.0 < self.rate < 1.0 or self.noise_shape is not None
                or keras.backend.backend() != "tensorflow"):
            return super().call(inputs, training=training)
        import tensorflow as tf

        seed = self.seed_generator.next()
        if keras.backend.standardize_dtype(seed.dtype) != "int32":
            seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
        threshold = int(round(self.rate * 65536))
        shape = tf.shape(inputs)
        size = tf.reduce_prod(shape)
        bits = tf.random.stateless_uniform([(size + 1) // 2], seed, minval=None, maxval=None,
                                           dtype=tf.int32)
        halves = tf.reshape(tf.bitcast(bits, tf.int16), [-1])[:size]  # signed: -32768..32767
        keep = tf.reshape(halves, shape) >= tf.constant(threshold - 32768, tf.int16)
        scale = tf.constant(65536.0 / (65536 - threshold), inputs.dtype)
        return inputs * (tf.cast(keep, inputs.dtype) * scale)


def _bias_add(x, bias):
    """`tf.nn.bias_add` whose bias gradient is summed accurately in half precision.

    TensorFlow's `BiasAddGrad` kernel adds bfloat16 (and float16) rows in the
    input's own precision: for a (2,048, 1,536) bfloat16 gradient its column sums
    were off by a median 4% of their size (up to 15 in sums of about 30). The bias
    gradient here is `reduce_sum` over the rows instead, which TensorFlow
    accumulates in float32 and rounds once (a median 0.13%, the rounding of the
    result), as PyTorch's autocast does, and it is also a little faster. float32 and
    float64 keep the stock kernel.
    """
    import tensorflow as tf

    if getattr(_INFERENCE, "on", False) or x.dtype not in (tf.bfloat16, tf.float16):
        return tf.nn.bias_add(x, bias)

    @tf.custom_gradient
    def add(x, bias):
        def grad(upstream):
            rows = tf.reshape(upstream, [-1, tf.shape(upstream)[-1]])
            return upstream, tf.reduce_sum(rows, 0)

        return tf.nn.bias_add(x, bias), grad

    return add(x, bias)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` with an accurate bias gradient in bfloat16 / float16.

    On TensorFlow, the bias is added by `_bias_add`, whose gradient sums the rows
    with float32 accumulation where the stock `BiasAddGrad` kernel sums half
    precision in half precision. The weights, their names and the forward values
    are `keras.layers.Dense`'s; other backends, quantized and LoRA layers use it as
    it is.
    """

    def call(self, inputs, training=None):
        if (keras.backend.backend() != "tensorflow" or self.bias is None
                or self.quantization_mode or getattr(self, "lora_enabled", False)):
            return super().call(inputs, training=training)
        x = _bias_add(ops.matmul(inputs, self.kernel), ops.cast(self.bias, self.compute_dtype))
        if self.activation is not None:
            x = self.activation(x)
        return x


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TokenEmbedding(keras.layers.Embedding):
    """Word-piece embedding that can also project hidden states back to the vocabulary.

    `call(ids)` looks ids up; `call(hidden, reverse=True)` multiplies by the
    transposed table, which is how the MLM decoder is tied to the input embeddings.

    Args:
        input_dim: vocabulary size.
        output_dim: hidden size.
    """

    def call(self, inputs, reverse=False):
        if reverse:
            table = ops.cast(self.embeddings, self.compute_dtype)
            inputs = ops.cast(inputs, self.compute_dtype)
            if keras.backend.backend() != "tensorflow":
                # (..., hidden) @ (hidden, vocab) -> (..., vocab)
                return ops.matmul(inputs, ops.transpose(table))
            import tensorflow as tf

            rows = tf.reshape(inputs, [-1, tf.shape(inputs)[-1]])
            logits = tf.matmul(rows, table, transpose_b=True)  # (rows, vocab)
            return tf.reshape(logits, tf.concat([tf.shape(inputs)[:-1], [self.input_dim]], 0))
        return super().call(inputs)

    def compute_output_shape(self, input_shape, reverse=False):
        if reverse:
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PositionAndSegmentEmbedding(keras.layers.Layer):
    """Adds position and segment embeddings to token embeddings, then LayerNorm + dropout.

    Args:
        max_position_embeddings: longest sequence.
        type_vocab_size: number of segment ids.
        hidden_size: embedding width.
        initializer_range: initializer stddev. Defaults to 0.02.
        layer_norm_eps: LayerNorm epsilon. Defaults to 1e-12.
        dropout: dropout rate after the LayerNorm. Defaults to 0.1.
    """

    def __init__(self, max_position_embeddings, type_vocab_size, hidden_size,
                 initializer_range=0.02, layer_norm_eps=1e-12, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.hidden_size = hidden_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, dtype=self.dtype_policy, name="layer_norm")
        self.dropout_layer = Dropout(dropout, dtype=self.dtype_policy, name="dropout")

    def build(self, input_shape):
        init = truncated_normal(self.initializer_range)
        self.position_embeddings = self.add_weight(
            name="position_embeddings", shape=(self.max_position_embeddings, self.hidden_size),
            initializer=init)
        self.token_type_embeddings = self.add_weight(
            name="token_type_embeddings", shape=(self.type_vocab_size, self.hidden_size),
            initializer=init)
        self.layer_norm.build(tuple(input_shape))
        super().build(input_shape)

    def call(self, token_embeddings, segment_ids, training=False):
        seq_len = ops.shape(token_embeddings)[1]
        # (seq_len, hidden), broadcast over the batch.
        positions = ops.cast(self.position_embeddings[:seq_len], self.compute_dtype)
        segments = ops.take(ops.cast(self.token_type_embeddings, self.compute_dtype),
                            ops.cast(segment_ids, "int32"), axis=0)
        x = token_embeddings + segments + positions[None, :, :]
        if not training and _fusable_inference(self.compute_dtype):
            import tensorflow as tf

            rows = _fused_layer_norm(self.layer_norm, tf.reshape(x, [-1, self.hidden_size]))
            return tf.reshape(rows, tf.shape(x))
        x = self.layer_norm(x)
        return self.dropout_layer(x, training=training)

    def compute_output_shape(self, token_embeddings_shape, segment_ids_shape=None):
        return tuple(token_embeddings_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size, hidden_size=self.hidden_size,
            initializer_range=self.initializer_range, layer_norm_eps=self.layer_norm_eps,
            dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SelfAttention(keras.layers.Layer):
    """Multi-head scaled dot-product self-attention with a padding mask.

    Separate query/key/value/output projections, as in the original checkpoint,
    so weights map one-to-one onto TF1 and Hugging Face names.

    Args:
        hidden_size: model width.
        num_attention_heads: number of heads; must divide hidden_size.
        attention_probs_dropout_prob: dropout on attention weights. Defaults to 0.1.
        initializer_range: initializer stddev. Defaults to 0.02.
    """

    def __init__(self, hidden_size, num_attention_heads, attention_probs_dropout_prob=0.1,
                 initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.head_size = hidden_size // num_attention_heads
        dense = dict(kernel_initializer=truncated_normal(initializer_range),
                     dtype=self.dtype_policy)
        self.query = Dense(hidden_size, name="query", **dense)
        self.key = Dense(hidden_size, name="key", **dense)
        self.value = Dense(hidden_size, name="value", **dense)
        self.output_dense = Dense(hidden_size, name="output", **dense)
        self.dropout = Dropout(attention_probs_dropout_prob, dtype=self.dtype_policy)

    def build(self, input_shape):
        for layer in (self.query, self.key, self.value, self.output_dense):
            layer.build(input_shape)
        super().build(input_shape)

    def _split_heads(self, x, batch, seq_len):
        # (batch, seq_len, hidden) -> (batch, heads, seq_len, head_size)
        x = ops.reshape(x, (batch, seq_len, self.num_attention_heads, self.head_size))
        return ops.transpose(x, (0, 2, 1, 3))

    def _attend(self, q, k, v, attention_mask, training):
        """Context (batch, heads, seq_len, head_size) from split heads."""
        q = q * ops.cast(1.0 / math.sqrt(self.head_size), q.dtype)
        # (batch, heads, seq_len, seq_len)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
        # attention_mask: (batch, seq_len) of 1 (attend) / 0 (padding), on the keys.
        adder = (1.0 - ops.cast(attention_mask, scores.dtype)) * ops.cast(_MASK_ADDER, scores.dtype)
        scores = scores + adder[:, None, None, :]
        probs = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        probs = self.dropout(ops.cast(probs, self.compute_dtype), training=training)
        return ops.matmul(probs, v)

    def call(self, x, attention_mask, training=False):
        batch, seq_len = ops.shape(x)[0], ops.shape(x)[1]
        q = self._split_heads(self.query(x), batch, seq_len)
        k = self._split_heads(self.key(x), batch, seq_len)
        v = self._split_heads(self.value(x), batch, seq_len)
        context = self._attend(q, k, v, attention_mask, training)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (batch, seq_len, self.hidden_size))
        return self.output_dense(context)

    def call_rows(self, rows, batch, seq_len, attention_mask):
        """Inference attention's context on (batch * seq_len, hidden) rows (TensorFlow).

        The output projection is left to the caller, which adds the residual to it
        so that the matmul, its bias and the add fuse into one kernel.
        """
        import tensorflow as tf

        context = self._attend(self._split_heads(self.query(rows), batch, seq_len),
                               self._split_heads(self.key(rows), batch, seq_len),
                               self._split_heads(self.value(rows), batch, seq_len),
                               attention_mask, training=False)
        # Reshaped to `rows`' own shape, so that the optimizer sees the projection and
        # the residual as one shape and fuses their add into the matmul.
        return tf.reshape(tf.transpose(context, (0, 2, 1, 3)), tf.shape(rows))

    def call_packed(self, packed, index, batch, seq_len, attention_mask, training=False):
        """Attention for the real tokens only (TensorFlow).

        Args:
            packed: (tokens, hidden) hidden states of the batch's real tokens.
            index: (tokens, 1) int64 flat positions of those tokens in
                (batch * seq_len), as `tf.where(mask)` gives them.
            batch, seq_len: the padded batch's shape.
            attention_mask: (batch, seq_len), 1 for real tokens.
            training: whether dropout is on.

        Returns:
            (tokens, hidden): the attention output of each real token, the same
            values `call` gives at those positions.
        """
        import tensorflow as tf

        size = [batch * seq_len, self.hidden_size]

        def heads(dense):
            # Only the projection is per token; the scores need the padded layout.
            return self._split_heads(tf.scatter_nd(index, dense(packed), size), batch, seq_len)

        context = self._attend(heads(self.query), heads(self.key), heads(self.value),
                               attention_mask, training)
        context = tf.reshape(tf.transpose(context, (0, 2, 1, 3)), size)
        return self.output_dense(tf.gather_nd(context, index))

    def compute_output_shape(self, x_shape, attention_mask_shape=None):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_size=self.hidden_size, num_attention_heads=self.num_attention_heads,
                      attention_probs_dropout_prob=self.attention_probs_dropout_prob,
                      initializer_range=self.initializer_range)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TransformerLayer(keras.layers.Layer):
    """One post-LayerNorm BERT Transformer layer.

    x = LN(x + Dropout(Attention(x))); x = LN(x + Dropout(W2·act(W1·x))).

    Args:
        hidden_size: model width.
        num_attention_heads: attention heads.
        intermediate_size: feed-forward width.
        hidden_act: feed-forward activation name (see `get_activation`). Defaults to "gelu".
        hidden_dropout_prob: dropout on sub-layer outputs. Defaults to 0.1.
        attention_probs_dropout_prob: dropout on attention weights. Defaults to 0.1.
        initializer_range: initializer stddev. Defaults to 0.02.
        layer_norm_eps: LayerNorm epsilon. Defaults to 1e-12.
    """

    def __init__(self, hidden_size, num_attention_heads, intermediate_size, hidden_act="gelu",
                 hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                 initializer_range=0.02, layer_norm_eps=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self._activation = get_activation(hidden_act)
        policy = self.dtype_policy
        self.attention = SelfAttention(hidden_size, num_attention_heads,
                                       attention_probs_dropout_prob, initializer_range,
                                       dtype=policy, name="attention")
        self.attention_dropout = Dropout(hidden_dropout_prob, dtype=policy)
        self.attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, dtype=policy, name="attention_layer_norm")
        self.intermediate = Dense(
            intermediate_size, kernel_initializer=truncated_normal(initializer_range),
            dtype=policy, name="intermediate")
        self.output_dense = Dense(
            hidden_size, kernel_initializer=truncated_normal(initializer_range),
            dtype=policy, name="output")
        self.output_dropout = Dropout(hidden_dropout_prob, dtype=policy)
        self.output_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, dtype=policy, name="output_layer_norm")

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.attention.build(input_shape)
        self.attention_layer_norm.build(input_shape)
        self.intermediate.build(input_shape)
        self.output_dense.build(input_shape[:-1] + (self.intermediate_size,))
        self.output_layer_norm.build(input_shape)
        super().build(input_shape)

    #: A training step runs the per-token parts of the layer (projections, feed-forward,
    #: LayerNorm, dropout) on the batch's real tokens only; see `_call_unpadded`.
    #: `BertEncoder.skip_padding` sets it for every layer.
    skip_padding = True

    def call(self, x, attention_mask, training=False):
        if not training and self._activation is gelu and _fusable_inference(self.compute_dtype):
            return self._call_fused(x, attention_mask)
        if training and self.skip_padding and _can_skip_padding():
            import tensorflow as tf

            # Gathering and scattering cost about 7% of a step, so a batch with
            # little padding (an eighth or less) takes the padded path.
            real = tf.reshape(attention_mask, [-1]) > 0
            padded_enough = tf.reduce_sum(tf.cast(real, tf.int32)) * 8 < tf.size(real) * 7
            return tf.cond(padded_enough,
                           lambda: self._call_unpadded(x, attention_mask, real, training),
                           lambda: self._call_padded(x, attention_mask, training))
        return self._call_padded(x, attention_mask, training)

    def _call_padded(self, x, attention_mask, training):
        attended = self.attention(x, attention_mask, training=training)
        x = self.attention_layer_norm(x + self.attention_dropout(attended, training=training))
        h = self._activation(self.intermediate(x))
        h = self.output_dense(h)
        return self.output_layer_norm(x + self.output_dropout(h, training=training))

    def _call_fused(self, x, attention_mask):
        """Inference on (batch * seq_len, hidden) rows in the patterns oneDNN fuses.

        Per layer, the graph optimizer then runs each projection with its bias (and
        the feed-forward one with its GELU, the output ones with the residual) as one
        matmul, and each LayerNorm as one kernel: about 30 element-wise ops fewer per
        layer. A frozen BERT-base forward pass (seq 128) then takes about 1/1.5 of
        the time in bfloat16 and 1/1.2 in float32. The values are `call`'s to float
        rounding (the fused kernels keep float32 inside, so bfloat16 results round
        once where the unfused ops round at every step). See `_fusable_inference`.
        """
        import tensorflow as tf

        batch, seq_len = tf.shape(x)[0], tf.shape(x)[1]
        rows = tf.reshape(x, [-1, self.hidden_size])  # (batch * seq_len, hidden)
        context = self.attention.call_rows(rows, batch, seq_len, attention_mask)
        rows = _fused_layer_norm(self.attention_layer_norm,
                                 self.attention.output_dense(context) + rows)
        h = _fused_gelu(self.intermediate(rows))
        rows = _fused_layer_norm(self.output_layer_norm, self.output_dense(h) + rows)
        return tf.reshape(rows, tf.shape(x))

    def _call_unpadded(self, x, attention_mask, real, training):
        """`call` for training, computed on the real tokens only (TensorFlow).

        Everything but the attention scores works token by token, so the layer
        gathers the tokens whose mask is 1, runs the projections, feed-forward,
        LayerNorms and dropouts on them alone, and scatters the result back. Only
        the scores and the weighted sum use the padded (batch, seq_len) layout.
        A batch of short texts cut to its longest one is often a third padding,
        and a training step then does a third less work. Real tokens get the values
        `call` gives them (the dropout masks are drawn for a different shape);
        padded positions come out as zeros instead of values no loss reads. `real`
        is the flattened mask as booleans.
        """
        import tensorflow as tf

        batch, seq_len = tf.shape(x)[0], tf.shape(x)[1]
        index = tf.where(real)  # (tokens, 1)
        packed = tf.gather_nd(tf.reshape(x, [-1, self.hidden_size]), index)
        attended = self.attention.call_packed(packed, index, batch, seq_len, attention_mask,
                                              training=training)
        packed = self.attention_layer_norm(
            packed + self.attention_dropout(attended, training=training))
        h = self.output_dense(self._activation(self.intermediate(packed)))
        packed = self.output_layer_norm(packed + self.output_dropout(h, training=training))
        return tf.reshape(tf.scatter_nd(index, packed, [batch * seq_len, self.hidden_size]),
                          tf.shape(x))

    def compute_output_shape(self, x_shape, attention_mask_shape=None):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size, num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size, hidden_act=self.hidden_act,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            initializer_range=self.initializer_range, layer_norm_eps=self.layer_norm_eps)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Pooler(keras.layers.Layer):
    """tanh(W · h_[CLS] + b): BERT's pooled sentence vector.

    Args:
        hidden_size: model width.
        initializer_range: initializer stddev. Defaults to 0.02.
    """

    def __init__(self, hidden_size, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.initializer_range = initializer_range
        self.dense = Dense(hidden_size, activation="tanh",
                           kernel_initializer=truncated_normal(initializer_range),
                           dtype=self.dtype_policy, name="dense")

    def build(self, input_shape):
        self.dense.build((input_shape[0], input_shape[-1]))
        super().build(input_shape)

    def call(self, sequence_output):
        return self.dense(sequence_output[:, 0, :])  # (batch, hidden)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.hidden_size)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_size=self.hidden_size, initializer_range=self.initializer_range)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedLMHead(keras.layers.Layer):
    """MLM head: gather masked positions, dense + act + LayerNorm, tied decoder + bias.

    Args:
        vocab_size: vocabulary size (the decoder's output width).
        hidden_size: model width.
        hidden_act: transform activation. Defaults to "gelu".
        initializer_range: initializer stddev. Defaults to 0.02.
        layer_norm_eps: LayerNorm epsilon. Defaults to 1e-12.
        token_embedding: the encoder's `TokenEmbedding`, whose table is the decoder.
            Not serialized: the owning task model passes it again on rebuild.
    """

    def __init__(self, vocab_size, hidden_size, hidden_act="gelu", initializer_range=0.02,
                 layer_norm_eps=1e-12, token_embedding=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.token_embedding = token_embedding
        self._activation = get_activation(hidden_act)
        self.transform = Dense(hidden_size,
                               kernel_initializer=truncated_normal(initializer_range),
                               dtype=self.dtype_policy, name="transform")
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, dtype=self.dtype_policy, name="layer_norm")

    def build(self, sequence_output_shape, masked_lm_positions_shape=None):
        self.transform.build((None, None, self.hidden_size))
        self.layer_norm.build((None, None, self.hidden_size))
        self.output_bias = self.add_weight(name="output_bias", shape=(self.vocab_size,),
                                           initializer="zeros")
        super().build(sequence_output_shape)

    def call(self, sequence_output, masked_lm_positions):
        positions = ops.cast(masked_lm_positions, "int32")
        # (batch, predictions, hidden)
        gathered = ops.take_along_axis(sequence_output, positions[:, :, None], axis=1)
        h = self.layer_norm(self._activation(self.transform(gathered)))
        logits = self.token_embedding(h, reverse=True)  # (batch, predictions, vocab)
        logits = ops.cast(logits, "float32") + ops.cast(self.output_bias, "float32")
        return logits

    def compute_output_spec(self, sequence_output, masked_lm_positions):
        shape = (sequence_output.shape[0], masked_lm_positions.shape[1], self.vocab_size)
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                      hidden_act=self.hidden_act, initializer_range=self.initializer_range,
                      layer_norm_eps=self.layer_norm_eps)
        return config
