"""Task models: each a Keras functional model built on a `BertEncoder`.

- `BertPretrainingModel`: MLM (decoder tied to the word embeddings) + optional NSP.
- `BertClassifier`: sequence classification, or regression with `num_classes=1`.
- `BertTokenClassifier`: one label per token (NER).
- `BertSpanQA`: start/end logits for extractive question answering.
- `BertMultipleChoice`: one score per choice.

Every task model keeps the encoder as `model.encoder`, takes the encoder's inputs by
feature name and returns a dict of named outputs (logits in float32, also under
mixed precision, so losses stay numerically safe).
"""

import keras
from keras import ops

from keras_bert import features
from keras_bert import losses as bert_losses
from keras_bert.encoder import encoder_inputs
from keras_bert.layers import Dense, Dropout, MaskedLMHead, truncated_normal


def scale_loss_for_distribution(loss):
    """`loss / num_replicas_in_sync` under a `tf.distribute` strategy (TensorFlow backend).

    Gradients are summed across replicas, so each replica's loss is divided by their
    number, as Keras does for losses it computes itself.
    """
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = ops.multiply(loss, ops.cast(1.0 / replicas, loss.dtype))
    return loss


def _dense(units, initializer_range, policy, name):
    return Dense(units, kernel_initializer=truncated_normal(initializer_range),
                 dtype=policy, name=name)


@keras.saving.register_keras_serializable(package="keras_bert")
class MergeLeadingAxes(keras.layers.Layer):
    """(batch, choices, seq_len) -> (batch * choices, seq_len), computed at call time."""

    def call(self, x):
        return ops.reshape(x, (-1, ops.shape(x)[-1]))

    def compute_output_shape(self, input_shape):
        return (None, input_shape[-1])


@keras.saving.register_keras_serializable(package="keras_bert")
class SplitChoices(keras.layers.Layer):
    """(batch * choices, 1) -> (batch, choices).

    Args:
        num_choices: choices per example.
    """

    def __init__(self, num_choices, **kwargs):
        super().__init__(**kwargs)
        self.num_choices = num_choices

    def call(self, x):
        return ops.reshape(x, (-1, self.num_choices))

    def compute_output_shape(self, input_shape):
        return (None, self.num_choices)

    def get_config(self):
        config = super().get_config()
        config.update(num_choices=self.num_choices)
        return config


class _TaskModel(keras.Model):
    """Shared config handling: the encoder is serialized inside the task config."""

    _head_args = ()

    def _store(self, encoder, **head_args):
        self.encoder = encoder
        for key, value in head_args.items():
            setattr(self, key, value)

    @property
    def bert_config(self):
        return self.encoder.bert_config

    def get_config(self):
        config = {"encoder": keras.saving.serialize_keras_object(self.encoder),
                  "name": self.name, "trainable": self.trainable}
        config.update({key: getattr(self, key) for key in self._head_args})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_bert")
class BertPretrainingModel(_TaskModel):
    """BERT pre-training model: masked LM and (optionally) next-sentence prediction.

    Inputs: the encoder inputs plus `masked_lm_positions` (batch, predictions).
    Outputs: `mlm_logits` (batch, predictions, vocab) and, with NSP,
    `nsp_logits` (batch, 2). Trains with `model.fit` on dicts whose labels are
    `masked_lm_ids`, `masked_lm_weights` and `next_sentence_labels`; the loss is the
    original's (weighted MLM cross-entropy averaged over real predictions, plus NSP
    cross-entropy), and MLM/NSP accuracy appear in the progress bar.

    Args:
        encoder: a `BertEncoder`.
        use_nsp: add the next-sentence head. Defaults to True.
        **kwargs: forwarded to `keras.Model`.
    """

    _head_args = ("use_nsp",)

    def __init__(self, encoder, use_nsp=True, **kwargs):
        config = encoder.bert_config
        policy = encoder.dtype_policy
        inputs = encoder_inputs()
        inputs[features.MASKED_LM_POSITIONS] = keras.Input(
            shape=(None,), dtype="int32", name=features.MASKED_LM_POSITIONS)
        enc = encoder({k: inputs[k] for k in features.ENCODER_INPUTS})
        mlm = MaskedLMHead(config.vocab_size, config.hidden_size, config.hidden_act,
                           config.initializer_range, config.layer_norm_eps,
                           token_embedding=encoder.token_embedding, dtype=policy, name="mlm")
        outputs = {"mlm_logits": mlm(enc["sequence_output"], inputs[features.MASKED_LM_POSITIONS])}
        nsp = None
        if use_nsp:
            nsp = _dense(2, config.initializer_range, policy, "nsp")
            outputs["nsp_logits"] = ops.cast(nsp(enc["pooled_output"]), "float32")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._store(encoder, use_nsp=use_nsp)
        self.mlm_head = mlm
        self.nsp_head = nsp
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mlm_loss_tracker = keras.metrics.Mean(name="mlm_loss")
        self.mlm_accuracy = bert_losses.WeightedAccuracy(name="mlm_accuracy")
        self.nsp_loss_tracker = keras.metrics.Mean(name="nsp_loss") if use_nsp else None
        self.nsp_accuracy = bert_losses.WeightedAccuracy(name="nsp_accuracy") if use_nsp else None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Original pre-training loss; labels come in `y` (or in `x` when `y` is None)."""
        labels = y if y is not None else x
        mlm_loss = bert_losses.masked_lm_loss(
            labels[features.MASKED_LM_IDS], y_pred["mlm_logits"],
            labels[features.MASKED_LM_WEIGHTS])
        total = mlm_loss
        self.mlm_loss_tracker.update_state(mlm_loss)
        self.mlm_accuracy.update_state(labels[features.MASKED_LM_IDS], y_pred["mlm_logits"],
                                       labels[features.MASKED_LM_WEIGHTS])
        if self.use_nsp:
            nsp_labels = labels[features.NEXT_SENTENCE_LABELS]
            nsp_loss = bert_losses.next_sentence_loss(nsp_labels, y_pred["nsp_logits"])
            total = total + nsp_loss
            self.nsp_loss_tracker.update_state(nsp_loss)
            self.nsp_accuracy.update_state(ops.reshape(nsp_labels, (-1,)), y_pred["nsp_logits"])
        if self.losses:  # regularization losses, if any
            total = total + ops.sum(self.losses)
        self.loss_tracker.update_state(total)
        # Each replica's loss is divided by the replica count before gradients are
        # summed across replicas, as Keras does for its own losses; without it N
        # replicas would take N-times-too-large steps.
        return scale_loss_for_distribution(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        tracked = [self.loss_tracker, self.mlm_loss_tracker, self.mlm_accuracy]
        if self.use_nsp:
            tracked += [self.nsp_loss_tracker, self.nsp_accuracy]
        return tracked


class _LinearHeadModel(_TaskModel):
    """Dropout + one Dense ("classifier") on an encoder output; logits in float32."""

    _head_args = ("num_classes", "dropout")
    _encoder_output = None  # "pooled_output" or "sequence_output"

    def __init__(self, encoder, num_classes, dropout=None, **kwargs):
        config = encoder.bert_config
        dropout = config.hidden_dropout_prob if dropout is None else dropout
        inputs = encoder_inputs()
        features_in = encoder(inputs)[self._encoder_output]
        features_in = Dropout(dropout, dtype=encoder.dtype_policy)(features_in)
        head = _dense(num_classes, config.initializer_range, encoder.dtype_policy, "classifier")
        outputs = {"logits": ops.cast(head(features_in), "float32")}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._store(encoder, num_classes=num_classes, dropout=dropout)
        self.classifier = head


@keras.saving.register_keras_serializable(package="keras_bert")
class BertClassifier(_LinearHeadModel):
    """Sequence (or sentence-pair) classification on the pooled `[CLS]` vector.

    Output `logits` (batch, num_classes); with `num_classes=1` it is a regressor.

    Args:
        encoder: a `BertEncoder`.
        num_classes: number of labels (1 for regression).
        dropout: dropout before the classifier. Defaults to the encoder's hidden dropout.
        **kwargs: forwarded to `keras.Model`.
    """

    _encoder_output = "pooled_output"


@keras.saving.register_keras_serializable(package="keras_bert")
class BertTokenClassifier(_LinearHeadModel):
    """Per-token classification (NER): output `logits` (batch, seq_len, num_classes).

    Args:
        encoder: a `BertEncoder`.
        num_classes: number of tags.
        dropout: dropout before the classifier. Defaults to the encoder's hidden dropout.
        **kwargs: forwarded to `keras.Model`.
    """

    _encoder_output = "sequence_output"


@keras.saving.register_keras_serializable(package="keras_bert")
class BertSpanQA(_TaskModel):
    """Extractive QA: `start_logits` and `end_logits`, each (batch, seq_len).

    Args:
        encoder: a `BertEncoder`.
        **kwargs: forwarded to `keras.Model`.
    """

    def __init__(self, encoder, **kwargs):
        config = encoder.bert_config
        # The span softmax runs over every position, padding included (as the
        # original's and Hugging Face's do), so training computes padded positions too.
        encoder.skip_padding = False
        inputs = encoder_inputs()
        seq = encoder(inputs)["sequence_output"]
        head = _dense(2, config.initializer_range, encoder.dtype_policy, "qa_outputs")
        logits = ops.cast(head(seq), "float32")  # (batch, seq_len, 2)
        outputs = {"start_logits": logits[:, :, 0], "end_logits": logits[:, :, 1]}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._store(encoder)
        self.qa_outputs = head


@keras.saving.register_keras_serializable(package="keras_bert")
class BertMultipleChoice(_TaskModel):
    """Multiple choice: inputs (batch, num_choices, seq_len), output `logits` (batch, num_choices).

    Args:
        encoder: a `BertEncoder`.
        num_choices: choices per example.
        dropout: dropout before the scorer. Defaults to the encoder's hidden dropout.
        **kwargs: forwarded to `keras.Model`.
    """

    _head_args = ("num_choices", "dropout")

    def __init__(self, encoder, num_choices, dropout=None, **kwargs):
        config = encoder.bert_config
        dropout = config.hidden_dropout_prob if dropout is None else dropout
        inputs = {name: keras.Input(shape=(num_choices, None), dtype="int32", name=name)
                  for name in features.ENCODER_INPUTS}
        # (batch, choices, seq_len) -> (batch * choices, seq_len)
        flat = {name: MergeLeadingAxes(name=f"flatten_{name}")(t) for name, t in inputs.items()}
        pooled = encoder(flat)["pooled_output"]
        pooled = Dropout(dropout, dtype=encoder.dtype_policy)(pooled)
        head = _dense(1, config.initializer_range, encoder.dtype_policy, "classifier")
        scores = ops.cast(head(pooled), "float32")  # (batch * choices, 1)
        outputs = {"logits": SplitChoices(num_choices, name="choices")(scores)}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._store(encoder, num_choices=num_choices, dropout=dropout)
        self.classifier = head
