"""The BERT encoder as a Keras 3 functional model.

Inputs (dict): `input_ids`, `segment_ids`, `input_mask`, each (batch, seq_len) int.
Outputs (dict): `sequence_output` (batch, seq_len, hidden), `pooled_output`
(batch, hidden) and, with `output_hidden_states=True`, `hidden_states`: a list of
the embedding output and every layer's output.
"""

import keras

from keras_bert import features
from keras_bert.config import BertConfig
from keras_bert.layers import (PositionAndSegmentEmbedding, Pooler, TokenEmbedding,
                               TransformerLayer, truncated_normal)

_CONFIG_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "hidden_act", "hidden_dropout_prob",
                  "attention_probs_dropout_prob", "max_position_embeddings",
                  "type_vocab_size", "initializer_range", "layer_norm_eps")


def encoder_inputs(seq_len=None):
    """Keras inputs named as the features: `input_ids`, `segment_ids`, `input_mask`."""
    return {name: keras.Input(shape=(seq_len,), dtype="int32", name=name)
            for name in features.ENCODER_INPUTS}


@keras.saving.register_keras_serializable(package="keras_bert")
class BertEncoder(keras.Model):
    """BERT encoder: token + segment + position embeddings, then N Transformer layers.

    Constructor arguments are the `bert_config.json` fields (see `BertConfig`);
    `BertEncoder.from_bert_config(config)` is the usual way to build one.

    Args:
        vocab_size .. layer_norm_eps: as `BertConfig`.
        do_lower_case: stored with the model for the tokenizer. Defaults to True.
        output_hidden_states: also output every layer's hidden states. Defaults to False.
        **kwargs: forwarded to `keras.Model` (`name`, `dtype` such as "mixed_bfloat16").

    Example:
        >>> encoder = BertEncoder.from_bert_config(BertConfig.preset("tiny"))
        >>> out = encoder({"input_ids": ids, "segment_ids": seg, "input_mask": mask})
        >>> out["pooled_output"].shape
        (2, 128)
    """

    def __init__(self, vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
                 intermediate_size, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, max_position_embeddings=512,
                 type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
                 do_lower_case=True, output_hidden_states=False, dtype=None, **kwargs):
        policy = keras.dtype_policies.get(dtype) if dtype is not None else None
        token_embedding = TokenEmbedding(
            vocab_size, hidden_size, embeddings_initializer=truncated_normal(initializer_range),
            dtype=policy, name="word_embeddings")
        embeddings = PositionAndSegmentEmbedding(
            max_position_embeddings, type_vocab_size, hidden_size,
            initializer_range=initializer_range, layer_norm_eps=layer_norm_eps,
            dropout=hidden_dropout_prob, dtype=policy, name="embeddings")
        layers = [
            TransformerLayer(hidden_size, num_attention_heads, intermediate_size, hidden_act,
                             hidden_dropout_prob, attention_probs_dropout_prob,
                             initializer_range, layer_norm_eps, dtype=policy,
                             name=f"transformer_layer_{i}")
            for i in range(num_hidden_layers)
        ]
        pooler = Pooler(hidden_size, initializer_range, dtype=policy, name="pooler")

        inputs = encoder_inputs()
        x = embeddings(token_embedding(inputs[features.INPUT_IDS]), inputs[features.SEGMENT_IDS])
        hidden_states = [x]
        for layer in layers:
            x = layer(x, inputs[features.INPUT_MASK])
            hidden_states.append(x)
        outputs = {"sequence_output": x, "pooled_output": pooler(x)}
        if output_hidden_states:
            outputs["hidden_states"] = hidden_states
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.do_lower_case = do_lower_case
        self.output_hidden_states = output_hidden_states
        self.token_embedding = token_embedding
        self.embeddings = embeddings
        self.transformer_layers = layers
        self.pooler = pooler

    @property
    def skip_padding(self):
        """Whether training steps run the layers' per-token work on real tokens only.

        True by default: outputs at real positions are unchanged, and padded
        positions of `sequence_output` come out as zeros in training (inference
        always computes every position, as Hugging Face and the original do). Set
        it to False where a training loss reads padded positions (`BertSpanQA`
        does: its span softmax runs over every position, as the original's does).
        It is off by itself on other backends and inside an XLA-compiled step.
        """
        return all(layer.skip_padding for layer in self.transformer_layers)

    @skip_padding.setter
    def skip_padding(self, value):
        for layer in self.transformer_layers:
            layer.skip_padding = bool(value)

    @classmethod
    def from_bert_config(cls, config, **kwargs):
        """Builds an encoder from a `BertConfig`; kwargs go to the constructor."""
        values = {name: getattr(config, name) for name in _CONFIG_FIELDS}
        return cls(**values, do_lower_case=config.do_lower_case, **kwargs)

    @property
    def bert_config(self):
        """This encoder's hyper-parameters as a `BertConfig`."""
        return BertConfig(**{name: getattr(self, name) for name in _CONFIG_FIELDS},
                          do_lower_case=self.do_lower_case)

    def get_config(self):
        config = {name: getattr(self, name) for name in _CONFIG_FIELDS}
        config.update(do_lower_case=self.do_lower_case,
                      output_hidden_states=self.output_hidden_states,
                      name=self.name, trainable=self.trainable)
        if self.dtype_policy.name != keras.config.dtype_policy().name:
            config["dtype"] = self.dtype_policy.name
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
