"""SavedModel export with raw-text signatures, for TF Serving and `tf.saved_model.load`.

The exported graph runs the same in-graph WordPiece tokenizer as training data
preparation, so a client sends plain strings. Layout, as TF Serving expects:

    BASE/<model_name>/<version>/saved_model.pb
                               /variables/...
                               /assets/vocab.txt
                               /assets.extra/tf_serving_warmup_requests

Signatures (every input is a batch: any batch size, including 1):

What is exported: a fine-tuned model for a task of the registry
`keras_bert.tasks.TASKS` (classification, pair, regression, ner, squad1, squad2; the
registry says which head the model carries and what the task serves), or the
pre-trained model itself as one of `EXPORT_KINDS`: `fill_mask` (the masked-LM head)
or `embedding` (the encoder).

- `serving_default`: `text` (and `text_b` for pair tasks) string [batch] → task outputs:
  - classification, pair: `probabilities` [batch, classes], `label` (name) and
    `label_id` [batch];
  - regression: `score` [batch];
  - fill_mask: `mask_positions` [batch, masks], `top_ids`, `top_tokens`, `top_scores`
    [batch, masks, top_k] for every literal `[MASK]` in the text;
  - embedding: `pooled_output` and `mean_pooled_output` [batch, hidden];
  - ner: entities decoded from the word tags with the conlleval
    rules (BIO or IOB1): `entity_type`, `entity_text`, `entity_start`, `entity_end`
    (character offsets into the request text, end exclusive), `entity_score` (mean
    probability of the entity's word tags), padded to [batch, max entities], and
    `num_entities` [batch]. Words are split as the training data was (`ner_words`):
    by default at whitespace, as CoNLL files give them, so "@user" or "U.S." is one
    word whose pieces include its punctuation and an entity covers whole words. A
    word's tag is the prediction at its first word piece, as in training; words cut
    off by `max_seq_length` get none;
  - squad1, squad2: `text` is the question, `text_b` the context. `answer_text`,
    `answer_start`/`answer_end` (character offsets into the context, widened to whole
    words; -1 when there is no answer), `score` (best start+end logit sum) and
    `null_score` (the lowest [CLS] start+end over the windows). Long contexts are
    windowed in the graph as fine-tuning windows them (the original `run_squad.py`):
    the question keeps its first `max_query_length` pieces (fewer if the window would
    hold no context), each window is `[CLS] question [SEP] context part [SEP]` of at
    most `max_seq_length` pieces, and windows start `doc_stride` context pieces
    apart. The answer is the best span of any window: start and end on the window's
    context part, at most `max_answer_length` pieces, starting in the window where
    its first piece has the most context (`keras_bert.tasks.max_context_windows`);
    offsets are into the whole context. With `allow_no_answer` (squad2) the answer
    is empty unless `score > null_score + null_score_threshold`.
- `embed`: the same text inputs → `pooled_output`, `mean_pooled_output` (all tasks).
- `encoded`: pre-tokenized `input_ids`, `segment_ids`, `input_mask` int32 [batch, seq] →
  the task outputs (no tokenizer).
- `classify` (classification, pair) / `regress` (regression): serialized `tf.Example`s in `inputs`
  with a bytes feature `text` (and `text_b`), method name `tensorflow/serving/classify`
  (`classes`, `scores`) or `tensorflow/serving/regress` (`outputs`), so the Classify
  and Regress RPCs work.

Over-long input is truncated to `max_seq_length` word pieces by the tokenizer's rule
(single text: keep the first `max_seq_length - 2` pieces; pairs: longest-first, as the
original); padding goes to the longest sequence in the batch, not to `max_seq_length`,
so short requests cost less. Invalid UTF-8 fails the request with an
InvalidArgumentError naming the input.
"""

import dataclasses
import os
import shutil
import tempfile

import numpy as np

import tensorflow as tf

from keras_bert import features
from keras_bert import heads as heads_lib
from keras_bert.tasks import TASKS
from keras_bert.encoder import BertEncoder
from keras_bert.tokenizer import InGraphBertTokenizer, _keep_first

WARMUP_FILE = "tf_serving_warmup_requests"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PREDICT_METHOD = "tensorflow/serving/predict"
# Exports of a pre-trained model that are not a fine-tuning task: what each serves.
EXPORT_KINDS = ("fill_mask", "embedding")
NER_WORDS = ("whitespace", "punctuation")


class ExportError(ValueError):
    """The model, task or export folder does not fit an export."""


def infer_task(model, pair=False, allow_no_answer=False):
    """The task (`TASKS`) or export kind (`EXPORT_KINDS`) of a Keras model from its type."""
    if isinstance(model, heads_lib.BertClassifier):
        if model.num_classes == 1:
            return "regression"
        return "pair" if pair else "classification"
    if isinstance(model, heads_lib.BertPretrainingModel):
        return "fill_mask"
    if isinstance(model, heads_lib.BertTokenClassifier):
        return "ner"
    if isinstance(model, heads_lib.BertSpanQA):
        return "squad2" if allow_no_answer else "squad1"
    if isinstance(model, BertEncoder):
        return "embedding"
    raise ExportError(f"no raw-text export for {type(model).__name__} yet; supported: "
                      f"BertClassifier, BertTokenClassifier, BertPretrainingModel, BertEncoder")


def _encoder_of(model):
    return model if isinstance(model, BertEncoder) else model.encoder


# A frozen export keeps its weights in the graph, which protocol buffers cap at 2 GB;
# above this many weight bytes the export keeps variables.
FREEZE_LIMIT_BYTES = 1536 << 20


def release_freed_memory():
    """Hands memory that freed objects left in the C heap back to the system (glibc).

    Exporting builds many short-lived copies of the weights (the traced graphs'
    function libraries, the frozen constants, the serialized SavedModel): a frozen
    BERT-base classifier export peaks at about 30 times its 440 MB of weights. Almost
    all of it is freed when the export returns, but glibc's allocator keeps the freed
    pages, so the process stayed at about 11 GB; `malloc_trim` returns them (to about
    1.3 GB), and whatever runs next in the process (a pipeline's Evaluate, a server)
    has that memory again. Elsewhere (musl, macOS) this only collects garbage.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def freeze_model(model, with_positions=False):
    """The task model's and its encoder's outputs from one function with constant weights.

    TensorFlow's oneDNN matmul reorders a constant weight matrix into its blocked
    layout once and keeps it; a variable's it reorders on every call. Frozen, a
    BERT forward pass is 14-18% faster on CPU (BERT-base, seq 128, batch 1 and 32,
    float32 and bfloat16) with the same outputs (to float rounding: oneDNN may sum a
    constant weight in another order). Both outputs come from one function so that
    each weight is stored once; a caller that uses one of them gets the other pruned
    from its graph.

    Args:
        model: a Keras BERT task model (or encoder) taking the encoder inputs.
        with_positions: the model also takes `masked_lm_positions` (fill-mask).

    Returns:
        `call(inputs) -> {"model": model outputs, "encoder": encoder outputs}`.
    """
    from tensorflow.python.framework import convert_to_constants

    encoder = _encoder_of(model)
    names = sorted(list(features.ENCODER_INPUTS)
                   + ([features.MASKED_LM_POSITIONS] if with_positions else []))
    spec = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in names}
    only_encoder = {name: spec[name] for name in features.ENCODER_INPUTS}

    def both(inputs):
        encoder_inputs = {name: inputs[name] for name in only_encoder}
        return {"model": model(inputs, training=False),
                "encoder": encoder(encoder_inputs, training=False)}

    from keras_bert import layers

    with layers.inference_graph():  # no custom-gradient ops in a serving graph
        traced = tf.function(both).get_concrete_function(spec)
    frozen = convert_to_constants.convert_variables_to_constants_v2(traced)
    structure = traced.structured_outputs

    def call(inputs):
        flat = frozen(*[inputs[name] for name in names])
        return tf.nest.pack_sequence_as(structure, flat, expand_composites=True)

    return call


def _trim_to_longest(inputs):
    """Cuts padding columns beyond the longest sequence of the batch."""
    longest = tf.reduce_max(tf.reduce_sum(inputs[features.INPUT_MASK], axis=1))
    longest = tf.maximum(longest, 1)
    return {k: v[:, :longest] for k, v in inputs.items()}


def _model_inputs(tok, first, second=None):
    """`[CLS] first [SEP] (second [SEP])` from ragged piece ids, as dense int32 inputs.

    Rows are padded to the longest one in the batch; `second` gets segment id 1.
    """
    batch = first.nrows()
    cls = tf.fill([batch, 1], tf.constant(tok.cls_id, tf.int64))
    sep = tf.fill([batch, 1], tf.constant(tok.sep_id, tf.int64))
    parts, segments = [cls, first, sep], [tf.zeros_like(cls), tf.zeros_like(first), tf.zeros_like(sep)]
    if second is not None:
        parts += [second, sep]
        segments += [tf.ones_like(second), tf.ones_like(sep)]
    full = tf.concat(parts, axis=1)  # (batch, (tokens))
    return {features.INPUT_IDS: tf.cast(full.to_tensor(default_value=tok.pad_id), tf.int32),
            features.SEGMENT_IDS: tf.cast(tf.concat(segments, axis=1).to_tensor(default_value=0),
                                          tf.int32),
            features.INPUT_MASK: tf.cast(tf.ones_like(full).to_tensor(default_value=0), tf.int32)}


class BertServingModule(tf.Module):
    """The exported object: tokenizer + Keras model + signature functions.

    Args:
        model: a `BertClassifier` (classes or regression), `BertPretrainingModel`
            (fill-mask) or `BertEncoder` (embeddings).
        vocab_path: the model's vocabulary file.
        do_lower_case: tokenizer casing; must be the model's.
        max_seq_length: longest sequence fed to the model. Defaults to 128.
        labels: class names for classifiers. Defaults to "0", "1", ...
        pair: signatures take `text_b` too (regression on text pairs; the registry
            decides for the other tasks). Defaults to False.
        task: a `TASKS` name or an `EXPORT_KINDS` name. Defaults to the one the model's
            type implies (`infer_task`).
        allow_no_answer: squad1/squad2 may answer "". Defaults to the task's
            (True for squad2).
        top_k: candidates per `[MASK]` for fill-mask. Defaults to 5.
        ner_words: how NER splits text into the words that carry tags:
            "whitespace" (as CoNLL-style training data) or "punctuation" (BERT's basic
            tokenizer: punctuation characters are words of their own). Defaults to
            "whitespace".
        max_query_length, max_answer_length, null_score_threshold, doc_stride:
            squad1/squad2 settings (see the module docstring). Defaults to 64, 30,
            0.0 and 128, fine-tuning's defaults.
    """

    def __init__(self, model, vocab_path, do_lower_case, max_seq_length=128, labels=None,
                 pair=False, top_k=5, task=None, max_query_length=64, max_answer_length=30,
                 allow_no_answer=None, null_score_threshold=0.0, ner_words="whitespace",
                 doc_stride=128, freeze_weights=False):
        super().__init__(name="bert_serving")
        if ner_words not in NER_WORDS:
            raise ExportError(f"ner_words must be one of {NER_WORDS}; got {ner_words!r}")
        self.ner_words = ner_words
        self.task = task or infer_task(model, pair, allow_no_answer)
        if self.task in TASKS:
            kind = TASKS[self.task]
            self.outputs = kind.serving
            from keras_bert import checkpoints
            head = checkpoints.heads_of(model)[0]
            if head != kind.head:
                raise ExportError(f"task {self.task!r} needs a {kind.head!r} model, got a "
                                  f"{head!r} one ({type(model).__name__})")
            if kind.pair is not None:
                if pair and not kind.pair:
                    raise ExportError(f"task {self.task!r} takes one text; export text pairs "
                                      f"as task 'pair'")
                pair = kind.pair
            if allow_no_answer is None:
                allow_no_answer = kind.allow_no_answer
            elif allow_no_answer and not kind.allow_no_answer:
                raise ExportError(f"task {self.task!r} always answers; use task 'squad2'")
        elif self.task in EXPORT_KINDS:
            self.outputs = self.task
        else:
            raise ExportError(f"unknown task {self.task!r}; expected a task "
                              f"({', '.join(TASKS)}) or one of {', '.join(EXPORT_KINDS)}")
        self.max_query_length = int(max_query_length)
        self.doc_stride = int(doc_stride)
        if self.doc_stride < 1:
            raise ExportError(f"doc_stride must be at least 1; got {doc_stride}")
        self.max_answer_length = int(max_answer_length)
        self.allow_no_answer = bool(allow_no_answer)
        self.null_score_threshold = float(null_score_threshold)
        self.freeze_weights = bool(freeze_weights)
        encoder = _encoder_of(model)
        if self.freeze_weights:
            # Only the frozen function is saved: the Keras model is not an attribute of
            # the module, or its variables would be saved too.
            frozen = freeze_model(model, with_positions=self.outputs == "fill_mask")
            self._run_model = lambda inputs: frozen(inputs)["model"]
            self._run_encoder = lambda inputs: frozen(
                {**inputs, **({features.MASKED_LM_POSITIONS: tf.zeros_like(
                    inputs[features.INPUT_IDS][:, :1])} if self.outputs == "fill_mask" else {})}
            )["encoder"]
        else:
            self.model = model
            self.encoder = encoder
            self._run_model = lambda inputs: self.model(inputs, training=False)
            self._run_encoder = lambda inputs: self.encoder(inputs, training=False)
        self.max_seq_length = int(max_seq_length)
        if self.max_seq_length > encoder.max_position_embeddings:
            raise ExportError(f"max_seq_length {max_seq_length} exceeds the model's "
                              f"max_position_embeddings {encoder.max_position_embeddings}")
        self.pair = bool(pair)
        self.top_k = int(top_k)
        self.tokenizer = InGraphBertTokenizer(vocab_path, do_lower_case=do_lower_case)
        if self.outputs in ("classes", "entities"):
            n = model.num_classes
            if labels is None and self.outputs == "entities":
                raise ExportError("a token-classification export needs its tag names (labels=...)")
            labels = [str(i) for i in range(n)] if labels is None else [str(l) for l in labels]
            if len(labels) != n:
                raise ExportError(f"{len(labels)} labels given for a {n}-class classifier")
            self.labels = tf.constant(labels)
        if self.outputs == "entities":
            # Per tag id: 1 for "B-", 2 for "I-" (and E-/S-, read as inside), 0 for "O";
            # and a type id shared by the tags of one entity type (0 for "O").
            types = sorted({l.split("-", 1)[1] for l in labels if "-" in l})
            self.tag_kind = tf.constant([0 if "-" not in l else (1 if l.startswith("B-") else 2)
                                         for l in labels], tf.int32)
            self.tag_type = tf.constant([0 if "-" not in l else 1 + types.index(l.split("-", 1)[1])
                                         for l in labels], tf.int32)
            self.type_names = tf.constant([""] + types)
        if self.outputs == "fill_mask":
            self.id_to_token = tf.lookup.StaticHashTable(
                tf.lookup.TextFileInitializer(
                    vocab_path, key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
                    value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE),
                default_value=features.UNK_TOKEN)

    # -- tokenization ------------------------------------------------------------------

    def _encode(self, text, text_b=None):
        inputs = self.tokenizer.encode(text, text_b, max_seq_length=self.max_seq_length)
        return _trim_to_longest(inputs)

    def _encode_with_masks(self, text):
        """Like `_encode`, but every literal "[MASK]" in the text becomes the mask id."""
        tok = self.tokenizer
        pieces = tf.strings.split(text, features.MASK_TOKEN)  # (batch, (segments))
        ids = tok.tokenize(pieces.flat_values, "text")  # (segments, (pieces))
        n = tf.shape(ids.row_lengths(), out_type=tf.int64)[0]
        mask = tf.RaggedTensor.from_row_lengths(
            tf.fill([n], tf.constant(tok.mask_id, tf.int64)), tf.ones([n], tf.int64))
        ids = tf.concat([ids, mask], axis=1)  # each segment followed by [MASK]
        rows = tf.RaggedTensor.from_row_lengths(ids, pieces.row_lengths()).merge_dims(1, 2)
        # Drop the [MASK] appended after the last segment, then truncate.
        keep = tf.minimum(rows.row_lengths() - 1, self.max_seq_length - 2)
        return _model_inputs(tok, _keep_first(rows, keep))

    # -- model -------------------------------------------------------------------------

    def _embeddings(self, inputs):
        out = self._run_encoder(inputs)
        seq = tf.cast(out["sequence_output"], tf.float32)
        mask = tf.cast(inputs[features.INPUT_MASK], tf.float32)[:, :, None]
        mean = tf.reduce_sum(seq * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        return {"pooled_output": tf.cast(out["pooled_output"], tf.float32),
                "mean_pooled_output": mean}

    def _task_outputs(self, inputs):
        if self.outputs == "embedding":
            return self._embeddings(inputs)
        if self.outputs == "answer":
            out = self._run_model(inputs)
            return {"start_logits": tf.cast(out["start_logits"], tf.float32),
                    "end_logits": tf.cast(out["end_logits"], tf.float32)}
        if self.outputs == "entities":
            probs = tf.nn.softmax(tf.cast(self._run_model(inputs)["logits"], tf.float32))
            tag_id = tf.argmax(probs, axis=-1, output_type=tf.int32)  # (batch, seq_len)
            return {"probabilities": probs, "tag_id": tag_id, "tag": tf.gather(self.labels, tag_id)}
        if self.outputs in ("classes", "score"):
            logits = tf.cast(self._run_model(inputs)["logits"], tf.float32)
            if self.outputs == "score":
                return {"score": logits[:, 0]}
            probs = tf.nn.softmax(logits, axis=-1)
            label_id = tf.argmax(probs, axis=-1, output_type=tf.int32)
            return {"probabilities": probs, "label_id": label_id,
                    "label": tf.gather(self.labels, label_id)}
        # fill_mask: positions of [MASK] ids, padded with 0 ([CLS]) beyond each row's count.
        is_mask = tf.equal(inputs[features.INPUT_IDS], self.tokenizer.mask_id)
        where = tf.cast(tf.where(is_mask), tf.int32)  # (masks, 2): row, column
        ragged = tf.RaggedTensor.from_value_rowids(
            where[:, 1], where[:, 0], nrows=tf.shape(is_mask, out_type=tf.int32)[0])
        positions = ragged.to_tensor(default_value=0)  # (batch, max masks)
        positions = tf.cond(tf.shape(positions)[1] > 0, lambda: positions,
                            lambda: tf.zeros([tf.shape(positions)[0], 1], tf.int32))
        logits = self._run_model({**inputs, features.MASKED_LM_POSITIONS: positions})["mlm_logits"]
        probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        top = tf.math.top_k(probs, k=self.top_k)
        valid = tf.cast(tf.sequence_mask(ragged.row_lengths(), tf.shape(positions)[1]), tf.float32)
        top_ids = tf.cast(top.indices, tf.int64)
        return {"mask_positions": tf.where(valid > 0, positions, -1),
                "top_ids": top_ids, "top_tokens": self.id_to_token.lookup(top_ids),
                "top_scores": top.values * valid[:, :, None]}

    def _entities(self, text):
        """NER on raw text: word tags from the first pieces, then entity spans."""
        tok = self.tokenizer
        if self.ner_words == "whitespace":
            ids, starts, ends = tok.tokenize_whitespace_words_with_offsets(text, "text")
        else:
            ids, starts, ends = tok.tokenize_words_with_offsets(text, "text")
        # ids: (batch, (words), (pieces)); starts, ends: (batch, (words))
        pieces_per_word = ids.row_lengths(axis=2)  # (batch, (words))
        # Position of each word's first piece in the model input ([CLS] is 0).
        first = 1 + tf.math.cumsum(pieces_per_word, axis=1, exclusive=True)
        kept = first <= self.max_seq_length - 2  # truncated words get no tag
        flat_ids = ids.merge_dims(1, 2)
        n = tf.minimum(flat_ids.row_lengths(), self.max_seq_length - 2)
        batch = tf.shape(n, out_type=tf.int64)[0]
        inputs = _model_inputs(tok, _keep_first(flat_ids, n))
        probs = tf.nn.softmax(tf.cast(self._run_model(inputs)["logits"], tf.float32))
        first = tf.ragged.boolean_mask(first, kept)
        starts = tf.ragged.boolean_mask(starts, kept)
        ends = tf.ragged.boolean_mask(ends, kept)
        rows = tf.cast(first.value_rowids(), tf.int64)
        word_probs = tf.gather_nd(probs, tf.stack([rows, first.flat_values], axis=1))  # (words, tags)
        tag = tf.argmax(word_probs, axis=-1, output_type=tf.int32)
        score = tf.reduce_max(word_probs, axis=-1)
        kind = tf.gather(self.tag_kind, tag)
        type_ = tf.gather(self.tag_type, tag)
        # conlleval: a chunk starts at B-X, or at I-X after O, after another type, or
        # at the start of a text; it continues over I-X of the same type.
        is_first = tf.equal(tf.ragged.range(first.row_lengths()).flat_values, 0)
        prev_type = tf.where(is_first, 0, tf.concat([[0], type_[:-1]], axis=0))
        inside = kind > 0
        starts_chunk = inside & ((kind == 1) | tf.not_equal(prev_type, type_))
        chunk = tf.cumsum(tf.cast(starts_chunk, tf.int32)) - 1  # chunk id of each word
        word_index = tf.range(tf.shape(tag)[0])
        members = tf.boolean_mask(word_index, inside)
        member_chunk = tf.boolean_mask(chunk, inside)
        num_chunks = tf.reduce_sum(tf.cast(starts_chunk, tf.int32))
        first_word = tf.math.unsorted_segment_min(members, member_chunk, num_chunks)
        last_word = tf.math.unsorted_segment_max(members, member_chunk, num_chunks)
        chunk_score = tf.math.unsorted_segment_mean(tf.boolean_mask(score, inside), member_chunk,
                                                    num_chunks)
        chunk_row = tf.gather(rows, first_word)
        byte_start = tf.gather(starts.flat_values, first_word)
        byte_end = tf.gather(ends.flat_values, last_word)
        source = tf.gather(text, chunk_row)
        zero = tf.zeros_like(byte_start)
        char_start = tf.strings.length(tf.strings.substr(source, zero, byte_start), unit="UTF8_CHAR")
        char_end = tf.strings.length(tf.strings.substr(source, zero, byte_end), unit="UTF8_CHAR")
        entity_text = tf.strings.substr(source, byte_start, byte_end - byte_start)
        entity_type = tf.gather(self.type_names, tf.gather(type_, first_word))

        def per_row(values, default):
            ragged = tf.RaggedTensor.from_value_rowids(values, chunk_row, nrows=batch)
            return ragged.to_tensor(default_value=default)

        return {"entity_type": per_row(entity_type, ""), "entity_text": per_row(entity_text, ""),
                "entity_start": per_row(char_start, -1), "entity_end": per_row(char_end, -1),
                "entity_score": per_row(chunk_score, 0.0),
                "num_entities": tf.cast(tf.math.bincount(tf.cast(chunk_row, tf.int32),
                                                         minlength=tf.cast(batch, tf.int32),
                                                         maxlength=tf.cast(batch, tf.int32)),
                                        tf.int32)}

    def _answers(self, question, context):
        """Extractive QA on raw text: the best span of the context, in characters.

        The context is cut into windows `[CLS] question [SEP] window [SEP]` that start
        `doc_stride` pieces apart (`keras_bert.tasks.window_spans`, as training data
        was built); every window runs through the model as one row, and the answer
        is the best allowed span of any window of the example.
        """
        tok = self.tokenizer
        q = tok.tokenize(question, "text")
        # The question gives way so that every window holds at least one context piece.
        q = _keep_first(q, tf.minimum(q.row_lengths(),
                                      min(self.max_query_length, self.max_seq_length - 4)))
        ids, starts, ends = tok.tokenize_words_with_offsets(context, "text_b")
        ctx = ids.merge_dims(1, 2)  # (batch, (pieces))
        # The word (batch-wide index) of every context piece, for mapping back to bytes.
        word_of_piece = tf.repeat(tf.range(tf.size(ids.row_lengths(axis=2), out_type=tf.int64)),
                                  ids.row_lengths(axis=2).flat_values)  # (pieces,)
        batch = ctx.nrows()
        num_pieces = ctx.row_lengths()  # (batch,)
        budget = self.max_seq_length - 3 - q.row_lengths()  # context pieces per window
        step = tf.minimum(budget, self.doc_stride)
        num_windows = 1 + (tf.maximum(num_pieces - budget, 0) + step - 1) // step
        # One row per window: its example, first context piece and length.
        row = tf.repeat(tf.range(batch), num_windows)  # (windows,)
        num_rows = tf.size(row, out_type=tf.int64)
        window = tf.range(num_rows)
        win_start = tf.ragged.range(num_windows).flat_values * tf.gather(step, row)
        win_len = tf.minimum(tf.gather(num_pieces, row) - win_start, tf.gather(budget, row))
        ctx_start = tf.gather(ctx.row_starts(), row)  # the example's first piece, batch-wide
        pieces = tf.ragged.range(ctx_start + win_start, ctx_start + win_start + win_len)
        q_w = tf.gather(q, row)
        inputs = _model_inputs(tok, q_w, tf.gather(ctx.flat_values, pieces))
        out = self._run_model(inputs)
        start_logits = tf.cast(out["start_logits"], tf.float32)  # (windows, seq_len)
        end_logits = tf.cast(out["end_logits"], tf.float32)
        seq_len = tf.shape(start_logits, out_type=tf.int64)[1]
        offset = q_w.row_lengths() + 2  # first context position of each window
        position = tf.range(seq_len)[None, :]
        local = position - offset[:, None]  # (windows, seq_len): piece index in the window
        in_context = (local >= 0) & (local < win_len[:, None])
        # A span may start only where its first piece has the most context
        # (`keras_bert.tasks.max_context_windows`; the first best window wins).
        context_score = (tf.cast(tf.minimum(local, win_len[:, None] - 1 - local), tf.float32)
                         + 0.01 * tf.cast(win_len, tf.float32)[:, None])
        total = tf.size(ctx.flat_values, out_type=tf.int64)
        piece = tf.where(in_context, (ctx_start + win_start)[:, None] + local, total)
        best_context = tf.math.unsorted_segment_max(context_score, piece, total + 1)
        is_best = in_context & tf.equal(context_score, tf.gather(best_context, piece))
        owner = tf.math.unsorted_segment_min(
            tf.where(is_best, tf.broadcast_to(window[:, None], tf.shape(piece)), num_rows),
            piece, total + 1)
        owned = is_best & tf.equal(window[:, None], tf.gather(owner, piece))
        # (windows, start, end) scores of every allowed span.
        span = start_logits[:, :, None] + end_logits[:, None, :]
        length = position[:, None, :] - position[:, :, None]
        allowed = (owned[:, :, None] & in_context[:, None, :] & (length >= 0)
                   & (length < self.max_answer_length))
        span = tf.reshape(tf.where(allowed, span, tf.fill(tf.shape(span), -1e30)),
                          [num_rows, seq_len * seq_len])
        window_score = tf.reduce_max(span, axis=1)  # (windows,)
        window_best = tf.argmax(span, axis=1)
        # The example's best window: the first that reaches the example's best score.
        score = tf.math.unsorted_segment_max(window_score, row, batch)  # (batch,)
        reaches = window_score >= tf.gather(score, row)
        best_window = tf.math.unsorted_segment_min(tf.where(reaches, window, num_rows), row, batch)
        best_window = tf.minimum(best_window, tf.maximum(num_rows - 1, 0))
        best = tf.gather(window_best, best_window)
        best_start, best_end = best // seq_len, best % seq_len
        # SQuAD 2.0's null score: the lowest [CLS] score over the example's windows.
        null_score = tf.math.unsorted_segment_min(start_logits[:, 0] + end_logits[:, 0], row, batch)
        has_context = num_pieces > 0
        answered = has_context
        if self.allow_no_answer:
            answered &= score > null_score + self.null_score_threshold
        # Window position -> batch-wide context piece -> word -> byte span in the context.
        base = tf.gather(ctx_start + win_start - offset, best_window)
        safe = tf.maximum(total - 1, 0)
        # One spare entry keeps the gathers in range when no row has any context.
        padded_words = tf.concat([word_of_piece, [0]], 0)

        def word_at(position):
            return tf.gather(padded_words, tf.clip_by_value(base + position, 0, safe))

        byte_start = tf.gather(tf.concat([starts.flat_values, [0]], 0), word_at(best_start))
        byte_end = tf.gather(tf.concat([ends.flat_values, [0]], 0), word_at(best_end))
        byte_start = tf.where(answered, byte_start, 0)
        byte_end = tf.where(answered, byte_end, 0)
        zero = tf.zeros_like(byte_start)
        char_start = tf.strings.length(tf.strings.substr(context, zero, byte_start), unit="UTF8_CHAR")
        char_end = tf.strings.length(tf.strings.substr(context, zero, byte_end), unit="UTF8_CHAR")
        return {"answer_text": tf.strings.substr(context, byte_start, byte_end - byte_start),
                "answer_start": tf.where(answered, char_start, -1),
                "answer_end": tf.where(answered, char_end, -1),
                "score": tf.where(has_context, score, tf.fill(tf.shape(score), -1e30)),
                "null_score": null_score}

    # -- signature bodies --------------------------------------------------------------

    def serve_text(self, text, text_b=None):
        if self.outputs == "answer":
            return self._answers(text, text_b)
        if self.outputs == "entities":
            return self._entities(text)
        if self.outputs == "fill_mask":
            return self._task_outputs(self._encode_with_masks(text))
        return self._task_outputs(self._encode(text, text_b))

    def embed_text(self, text, text_b=None):
        if self.outputs == "fill_mask":
            return self._embeddings(self._encode_with_masks(text))
        return self._embeddings(self._encode(text, text_b))

    def serve_encoded(self, input_ids, segment_ids, input_mask):
        return self._task_outputs({features.INPUT_IDS: input_ids,
                                   features.SEGMENT_IDS: segment_ids,
                                   features.INPUT_MASK: input_mask})

    def _parse_examples(self, serialized):
        spec = {features.TEXT: tf.io.FixedLenFeature([], tf.string)}
        if self.pair:
            spec[features.TEXT_B] = tf.io.FixedLenFeature([], tf.string)
        return tf.io.parse_example(serialized, spec)

    def classify_examples(self, inputs):
        parsed = self._parse_examples(inputs)
        out = self.serve_text(parsed[features.TEXT], parsed.get(features.TEXT_B))
        probs = out["probabilities"]
        classes = tf.tile(self.labels[None, :], [tf.shape(probs)[0], 1])
        return {"classes": classes, "scores": probs}

    def regress_examples(self, inputs):
        parsed = self._parse_examples(inputs)
        out = self.serve_text(parsed[features.TEXT], parsed.get(features.TEXT_B))
        return {"outputs": out["score"]}

    def signatures(self):
        """The concrete functions to save, by signature name."""
        text = tf.TensorSpec([None], tf.string, name=features.TEXT)
        text_b = tf.TensorSpec([None], tf.string, name=features.TEXT_B)
        ids = {name: tf.TensorSpec([None, None], tf.int32, name=name)
               for name in features.ENCODER_INPUTS}
        if self.pair:
            serve = tf.function(lambda text, text_b: self.serve_text(text, text_b))
            embed = tf.function(lambda text, text_b: self.embed_text(text, text_b))
            sigs = {"serving_default": serve.get_concrete_function(text, text_b),
                    "embed": embed.get_concrete_function(text, text_b)}
        else:
            serve = tf.function(lambda text: self.serve_text(text))
            embed = tf.function(lambda text: self.embed_text(text))
            sigs = {"serving_default": serve.get_concrete_function(text),
                    "embed": embed.get_concrete_function(text)}
        encoded = tf.function(lambda input_ids, segment_ids, input_mask:
                              self.serve_encoded(input_ids, segment_ids, input_mask))
        sigs["encoded"] = encoded.get_concrete_function(**ids)
        examples = tf.TensorSpec([None], tf.string, name="inputs")
        rpc = TASKS[self.task].examples_signature if self.task in TASKS else None
        if rpc == "classify":
            sigs["classify"] = tf.function(self.classify_examples).get_concrete_function(examples)
        elif rpc == "regress":
            sigs["regress"] = tf.function(self.regress_examples).get_concrete_function(examples)
        return sigs


def _set_method_names(export_dir, methods):
    """TF2 saves every signature as `predict`; Classify/Regress RPCs need their own."""
    from tensorflow.core.protobuf import saved_model_pb2
    path = os.path.join(export_dir, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved.ParseFromString(f.read())
    for meta in saved.meta_graphs:
        for name, method in methods.items():
            if name in meta.signature_def:
                meta.signature_def[name].method_name = method
    with open(path, "wb") as f:
        f.write(saved.SerializeToString())


def write_warmup_requests(export_dir, model_name, texts, pair=False):
    """Writes `assets.extra/tf_serving_warmup_requests` (PredictionLog TFRecords).

    Args:
        export_dir: the version folder.
        model_name: the served model name.
        texts: sample texts (pairs of texts when `pair`).
        pair: requests carry `text_b`. Defaults to False.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    folder = os.path.join(export_dir, "assets.extra")
    os.makedirs(folder, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(folder, WARMUP_FILE)) as writer:
        for batch in ([texts[0]], list(texts)):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default"))
            if pair:
                request.inputs[features.TEXT].CopyFrom(tf.make_tensor_proto([a for a, _ in batch]))
                request.inputs[features.TEXT_B].CopyFrom(tf.make_tensor_proto([b for _, b in batch]))
            else:
                request.inputs[features.TEXT].CopyFrom(tf.make_tensor_proto(batch))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def next_version(model_base_path):
    """1 + the largest integer version folder under `model_base_path` (1 when none)."""
    if not tf.io.gfile.isdir(model_base_path):
        return 1
    versions = [int(v) for v in tf.io.gfile.listdir(model_base_path) if v.strip("/").isdigit()]
    return max(versions, default=0) + 1


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: str
    version: int
    task: str
    signatures: tuple


def with_compute_dtype(model, dtype):
    """A copy of `model` whose layers hold weights and compute in `dtype` (e.g. bfloat16).

    For inference: a pure "bfloat16" model skips the per-call float32→bfloat16 weight
    casts of the "mixed_bfloat16" training policy (about 20% faster on AMX CPUs at
    batch 1, BERT-base). Outputs that the heads cast to float32 stay float32.
    """
    from keras_bert import checkpoints
    heads, head_kwargs = checkpoints.heads_of(model)
    copy = checkpoints.build_model(_encoder_of(model).bert_config, heads, dtype=dtype, **head_kwargs)
    copy.set_weights(model.get_weights())
    return copy


def export_saved_model(model, base_path, model_name, vocab_path, do_lower_case=None,
                       version=None, max_seq_length=128, labels=None, pair=False, top_k=5,
                       task=None, warmup_texts=None, compute_dtype=None, max_query_length=64,
                       max_answer_length=30, allow_no_answer=None, null_score_threshold=0.0,
                       ner_words="whitespace", doc_stride=128, freeze_weights=True):
    """Exports `model` as `base_path/model_name/version/` with raw-text signatures.

    Args:
        model: a fine-tuned model (`BertClassifier`, `BertTokenClassifier`,
            `BertSpanQA`), a `BertPretrainingModel` or a `BertEncoder`.
        base_path: the serving base folder.
        model_name: the served model name (a sub-folder of base_path).
        vocab_path: the vocabulary; copied to `assets/vocab.txt`.
        do_lower_case: tokenizer casing. Defaults to the model's config.
        version: integer version. Defaults to one past the newest existing.
        max_seq_length: longest sequence fed to the model. Defaults to 128.
        labels: class names for classifiers. Defaults to "0", "1", ...
        pair: sentence-pair signatures (`text`, `text_b`) for regression; the other
            tasks' registry entries decide (an inferred classifier with `pair` is task
            "pair"). Defaults to False.
        top_k: fill-mask candidates per mask. Defaults to 5.
        task: a `keras_bert.tasks.TASKS` name, or "fill_mask"/"embedding" for a
            pre-trained model. Defaults to the one the model's type implies.
        warmup_texts: sample inputs for the warm-up file. Defaults to two short texts.
        max_query_length, max_answer_length, allow_no_answer, null_score_threshold:
            squad1/squad2 settings (see the module docstring); `allow_no_answer`
            defaults to the task's (True for squad2). Defaults to 64, 30, None, 0.0.
        doc_stride: squad1/squad2: context pieces between the starts of the windows
            a long context is cut into, as in fine-tuning. Defaults to 128.
        ner_words: NER word splitting, "whitespace" (as CoNLL-style training data)
            or "punctuation". Defaults to "whitespace".
        compute_dtype: export a copy computing in this dtype, e.g. "bfloat16" (faster
            on CPUs with AMX/AVX512-BF16, ~3 significant digits). Defaults to None (as is).
        freeze_weights: store the weights as graph constants instead of variables
            (`freeze_model`): the same outputs (to float rounding) and SavedModel
            size, and a 14-18% faster forward pass on CPU. Models whose weights
            exceed `FREEZE_LIMIT_BYTES` (protocol buffers' 2 GB cap) keep variables.
            Defaults to True.

    Returns:
        An `ExportResult` (path, version, task or export kind, signature names).

    Example:
        >>> export_saved_model(classifier, "/models", "topic", "vocab.txt", labels=["a", "b"])
    """
    if compute_dtype is not None:
        model = with_compute_dtype(model, compute_dtype)
    encoder = _encoder_of(model)
    if do_lower_case is None:
        do_lower_case = encoder.do_lower_case
    model_base_path = os.path.join(base_path, model_name)
    version = next_version(model_base_path) if version is None else int(version)
    export_dir = os.path.join(model_base_path, str(version))
    if tf.io.gfile.exists(export_dir):
        raise ExportError(f"{export_dir} already exists; versions are immutable")
    with tempfile.TemporaryDirectory() as tmp:
        # The asset keeps the file's base name: make it vocab.txt whatever the source.
        local_vocab = os.path.join(tmp, "vocab.txt")
        tf.io.gfile.copy(vocab_path, local_vocab, overwrite=True)
        weight_bytes = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
                           for w in model.weights)
        freeze_weights = bool(freeze_weights) and weight_bytes <= FREEZE_LIMIT_BYTES
        module = BertServingModule(model, local_vocab, do_lower_case, max_seq_length, labels,
                                   pair, top_k, task, max_query_length, max_answer_length,
                                   allow_no_answer, null_score_threshold, ner_words, doc_stride,
                                   freeze_weights=freeze_weights)
        pair = module.pair
        signatures = module.signatures()
        staging = os.path.join(tmp, "export")
        partial = os.path.join(model_base_path, f".tmp-{version}")
        try:
            tf.saved_model.save(module, staging, signatures=signatures)
            methods = {"classify": CLASSIFY_METHOD, "regress": REGRESS_METHOD}
            _set_method_names(staging, methods)
            if warmup_texts is None:
                warmup_texts = ([("A short example.", "Another one.")] * 2 if pair else
                                ["A short example.", "Another [MASK] example." if module.outputs ==
                                 "fill_mask" else "Another example."])
            write_warmup_requests(staging, model_name, list(warmup_texts), pair)
            # Publish atomically: a server polling base_path never sees a half-written version.
            tf.io.gfile.makedirs(model_base_path)
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(staging, partial)
        except (OSError, shutil.Error, tf.errors.OpError) as e:
            # A full disk, say: nothing is published, and the message names the version.
            shutil.rmtree(partial, ignore_errors=True)
            raise ExportError(f"cannot export {export_dir} (nothing was published): "
                              f"{getattr(e, 'message', None) or e}") from e
        os.rename(partial, export_dir)
        result = ExportResult(path=export_dir, version=version, task=module.task,
                              signatures=tuple(sorted(signatures)))
        del module, signatures  # the traced graphs, before the memory is handed back
    release_freed_memory()
    return result
