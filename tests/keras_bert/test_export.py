"""Raw-text SavedModel export: signatures, fresh-process parity with Keras, warm-up, errors."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_bert import checkpoints, export, features
from keras_bert.config import BertConfig
from keras_bert.tokenizer import BertTokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Café naïve résumé — 東京 🙂",
         "x", ""]
MAX_LEN = 48


@pytest.fixture(scope="module")
def vocab(fixtures_dir):
    return str(fixtures_dir / "tokenizer" / "vocab_uncased.txt")


@pytest.fixture(scope="module")
def exported(vocab, tmp_path_factory):
    """One export per task from random tiny models: {task: (model, ExportResult)}."""
    base = str(tmp_path_factory.mktemp("models"))
    size = sum(1 for _ in open(vocab, encoding="utf-8"))
    config = BertConfig.preset("tiny", vocab_size=size, max_position_embeddings=64)
    specs = {"classification": ("classifier", {"num_classes": 3}),
             "regression": ("classifier", {"num_classes": 1}),
             "fill_mask": ("pretraining", {}),
             "embedding": ("encoder", {})}
    out = {}
    for task, (heads, kw) in specs.items():
        tf.keras.utils.set_random_seed(1)
        model = checkpoints.build_model(config, heads, **kw)
        labels = ["neg", "neutral", "pos"] if task == "classification" else None
        out[task] = (model, export.export_saved_model(model, base, task, vocab,
                                                      max_seq_length=MAX_LEN, labels=labels))
    return out


def _keras_inputs(vocab, texts):
    tok = BertTokenizer.from_vocab(vocab, do_lower_case=True)
    enc = tok.encode_batch(texts, max_seq_length=MAX_LEN)
    longest = int(np.max(np.sum(enc["input_mask"], axis=1)))
    return {k: np.asarray(v)[:, :longest].astype("int32") for k, v in enc.items()}


def test_layout_assets_and_signatures(exported):
    model, result = exported["classification"]
    assert result.version == 1 and result.path.endswith(os.path.join("classification", "1"))
    assert os.path.exists(os.path.join(result.path, "assets", "vocab.txt"))
    warm = os.path.join(result.path, "assets.extra", export.WARMUP_FILE)
    from tensorflow_serving.apis import prediction_log_pb2
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(warm)]
    assert logs and logs[0].predict_log.request.model_spec.name == "classification"
    assert set(result.signatures) == {"serving_default", "embed", "encoded", "classify"}
    from tensorflow.core.protobuf import saved_model_pb2
    saved = saved_model_pb2.SavedModel.FromString(open(os.path.join(result.path, "saved_model.pb"), "rb").read())
    sigs = saved.meta_graphs[0].signature_def
    assert sigs["classify"].method_name == export.CLASSIFY_METHOD
    assert sigs["serving_default"].method_name == export.PREDICT_METHOD
    assert set(sigs["serving_default"].inputs) == {"text"}


_FRESH = """
import json, sys, numpy as np, tensorflow as tf
import tensorflow_text  # registers the text ops the graph uses, as TF Serving links them
for path, texts, out_file in json.loads(sys.argv[1]):
    m = tf.saved_model.load(path)
    out = {}
    for name in ("serving_default", "embed"):
        r = m.signatures[name](text=tf.constant(texts))
        out.update({name + "/" + k: v.numpy() for k, v in r.items() if v.dtype != tf.string})
        out.update({name + "/" + k: np.vectorize(lambda b: b.decode("utf-8"))(v.numpy()) for k, v in r.items() if v.dtype == tf.string})
    np.savez(out_file, **out)
"""


def _fresh_texts(task):
    return TEXTS if task != "fill_mask" else ["The [MASK] brown fox.", "[MASK] and [MASK]!", "none here"]


@pytest.fixture(scope="module")
def fresh_outputs(exported, tmp_path_factory):
    """Every export's signatures run in one fresh process: {task: {output name: array}}.

    The process imports TensorFlow and tensorflow_text only (never this library), as
    TF Serving would load the model; one process serves all four exports.
    """
    folder = tmp_path_factory.mktemp("fresh")
    jobs = [(result.path, _fresh_texts(task), str(folder / f"{task}.npz"))
            for task, (_, result) in exported.items()]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _FRESH, json.dumps(jobs)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {task: dict(np.load(str(folder / f"{task}.npz"))) for task in exported}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "regression", "fill_mask", "embedding"])
def test_fresh_process_reload_matches_keras(exported, fresh_outputs, vocab, task):
    model, result = exported[task]
    texts = _fresh_texts(task)
    got = fresh_outputs[task]
    x = _keras_inputs(vocab, [t.replace("[MASK]", "MASKMARK") for t in texts])
    encoder = model if task == "embedding" else model.encoder
    if task == "fill_mask":
        # The Python tokenizer follows the original (no special tokens in raw text): put
        # the mask ids where the export's splitting on "[MASK]" puts them.
        tok = BertTokenizer.from_vocab(vocab)
        rows = []
        for t in texts:
            ids = [tok.cls_id]
            for i, part in enumerate(t.split("[MASK]")):
                if i:
                    ids.append(tok.mask_id)
                ids += tok.convert_tokens_to_ids(tok.tokenize(part))
            rows.append(ids + [tok.sep_id])
        longest = max(map(len, rows))
        ids = np.array([r + [0] * (longest - len(r)) for r in rows], "int32")
        x = {"input_ids": ids, "segment_ids": np.zeros_like(ids),
             "input_mask": (np.arange(longest)[None] < np.array([len(r) for r in rows])[:, None]).astype("int32")}
        positions = got["serving_default/mask_positions"]
        expected_pos = [[j for j, v in enumerate(r) if v == tok.mask_id] for r in rows]
        for b, exp in enumerate(expected_pos):
            assert list(positions[b][positions[b] >= 0]) == exp
        pos = np.where(positions >= 0, positions, 0).astype("int32")
        logits = np.asarray(model({**x, "masked_lm_positions": pos})["mlm_logits"])
        probs = tf.nn.softmax(logits).numpy()
        top = np.argsort(-probs, axis=-1)[:, :, :5]
        for b, exp in enumerate(expected_pos):
            for k in range(len(exp)):
                np.testing.assert_array_equal(got["serving_default/top_ids"][b, k], top[b, k])
                np.testing.assert_allclose(got["serving_default/top_scores"][b, k],
                                           np.take(probs[b, k], top[b, k]), atol=1e-5)
    elif task == "classification":
        probs = tf.nn.softmax(model(x)["logits"]).numpy()
        np.testing.assert_allclose(got["serving_default/probabilities"], probs, atol=1e-5)
        names = np.array(["neg", "neutral", "pos"])[probs.argmax(-1)]
        assert list(got["serving_default/label"]) == list(names)
    elif task == "regression":
        np.testing.assert_allclose(got["serving_default/score"], np.asarray(model(x)["logits"])[:, 0],
                                   atol=1e-5)
    enc = encoder(x)
    np.testing.assert_allclose(got["embed/pooled_output"], enc["pooled_output"], atol=1e-5)
    mask = x["input_mask"][:, :, None].astype("float32")
    mean = (np.asarray(enc["sequence_output"]) * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(got["embed/mean_pooled_output"], mean, atol=1e-5)


def test_classify_and_regress_signatures(exported):
    def examples(texts):
        return tf.constant([tf.train.Example(features=tf.train.Features(feature={
            "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode()]))}))
            .SerializeToString() for t in texts])

    loaded = tf.saved_model.load(exported["classification"][1].path)
    out = loaded.signatures["classify"](inputs=examples(TEXTS[:2]))
    direct = loaded.signatures["serving_default"](text=tf.constant(TEXTS[:2]))
    np.testing.assert_allclose(out["scores"], direct["probabilities"], atol=1e-6)
    assert out["classes"].numpy()[0].tolist() == [b"neg", b"neutral", b"pos"]
    reg = tf.saved_model.load(exported["regression"][1].path)
    out = reg.signatures["regress"](inputs=examples(TEXTS[:2]))
    np.testing.assert_allclose(out["outputs"], reg.signatures["serving_default"](
        text=tf.constant(TEXTS[:2]))["score"], atol=1e-6)


def test_encoded_signature_matches_text_signature(exported, vocab):
    loaded = tf.saved_model.load(exported["classification"][1].path)
    x = _keras_inputs(vocab, TEXTS)
    a = loaded.signatures["encoded"](**{k: tf.constant(v) for k, v in x.items()})
    b = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-6)


def test_overlong_input_is_truncated_and_bad_utf8_is_rejected(exported):
    loaded = tf.saved_model.load(exported["embedding"][1].path)
    long_text = " ".join(["extraordinarily"] * 500)
    out = loaded.signatures["serving_default"](text=tf.constant([long_text, "short"]))
    assert out["pooled_output"].shape == (2, 128)
    with pytest.raises(tf.errors.InvalidArgumentError, match="invalid UTF-8"):
        loaded.signatures["serving_default"](text=tf.constant([b"ok", b"bad \xff\xfe"]))


def test_versions_increment_and_are_immutable(exported, vocab):
    model, result = exported["embedding"]
    base = os.path.dirname(os.path.dirname(result.path))
    second = export.export_saved_model(model, base, "embedding", vocab, max_seq_length=MAX_LEN)
    assert second.version == 2
    with pytest.raises(export.ExportError, match="already exists"):
        export.export_saved_model(model, base, "embedding", vocab, version=2)


def test_exported_ops_are_in_the_tf_2_12_allowlist(exported):
    serving_ops = pytest.importorskip("tests.serving_ops")
    for task, (_, result) in exported.items():
        assert serving_ops.check_ops(result.path) == [], task


def test_bfloat16_export_is_close_to_float32(exported, vocab, tmp_path):
    model, _ = exported["classification"]
    result = export.export_saved_model(model, str(tmp_path), "bf16", vocab, max_seq_length=MAX_LEN,
                                       labels=["neg", "neutral", "pos"], compute_dtype="bfloat16")
    loaded = tf.saved_model.load(result.path)
    got = loaded.signatures["serving_default"](text=tf.constant(TEXTS))["probabilities"].numpy()
    want = tf.nn.softmax(model(_keras_inputs(vocab, TEXTS))["logits"]).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=0.05)


NER_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
NER_TEXTS = ["Ada Lovelace met Charles Babbage in London.", "Zoë Ünal visited 東京 — twice!",
             "x", "", "a\u200bb c\x00d émigré   spaced\ttabs", "short " * 40]


def _reference_entities(model, vocab, text, max_len):
    """Python path: offsets from keras_bert.tasks, tags at first pieces, conlleval chunks."""
    from keras_bert import metrics as metrics_lib
    from keras_bert import tasks
    tok = BertTokenizer.from_vocab(vocab)
    t = tasks.tokenize_with_offsets(tok, text)
    tokens = t.tokens[: max_len - 2]
    ids = [tok.cls_id] + tok.convert_tokens_to_ids(tokens) + [tok.sep_id]
    x = {"input_ids": np.array([ids], "int32"), "segment_ids": np.zeros((1, len(ids)), "int32"),
         "input_mask": np.ones((1, len(ids)), "int32")}
    probs = tf.nn.softmax(model(x)["logits"]).numpy()[0]
    words = []  # (first token index, start, end)
    for i, token in enumerate(tokens):
        if token.startswith("##") and words:
            words[-1][2] = t.ends[i]
        else:
            words.append([i, t.starts[i], t.ends[i]])
    tags = [NER_TAGS[int(probs[i + 1].argmax())] for i, _, _ in words]
    out = []
    for type_, first, last in metrics_lib.get_entities(tags):
        start, end = words[first][1], words[last][2]
        out.append((type_, start, end, text[start:end]))
    return out


def _served_entities(export_path, texts):
    loaded = tf.saved_model.load(export_path)
    out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
        text=tf.constant(texts)).items()}
    entities = []
    for b in range(len(texts)):
        n = int(out["num_entities"][b])
        entities.append([(out["entity_type"][b, i].decode(), int(out["entity_start"][b, i]),
                          int(out["entity_end"][b, i]), out["entity_text"][b, i].decode("utf-8"))
                         for i in range(n)])
    return entities


@pytest.fixture(scope="module")
def ner_model(vocab):
    size = sum(1 for _ in open(vocab, encoding="utf-8"))
    tf.keras.utils.set_random_seed(4)
    return checkpoints.build_model(BertConfig.preset("tiny", vocab_size=size, max_position_embeddings=64),
                                   "token_classifier", num_classes=len(NER_TAGS))


def test_ner_export_punctuation_words_give_the_python_entities(ner_model, vocab, tmp_path):
    result = export.export_saved_model(ner_model, str(tmp_path), "ner", vocab, max_seq_length=MAX_LEN,
                                       labels=NER_TAGS, ner_words="punctuation")
    assert result.task == "ner"  # the task registry's name
    total = 0
    for text, got in zip(NER_TEXTS, _served_entities(result.path, NER_TEXTS)):
        assert got == _reference_entities(ner_model, vocab, text, MAX_LEN), ascii(text)
        for type_, start, end, entity in got:
            assert text[start:end] == entity
        total += len(got)
    assert total > 5  # a random model tags plenty: the comparison is not vacuous
    serving_ops = pytest.importorskip("tests.serving_ops")
    assert serving_ops.check_ops(result.path) == []


# Words as CoNLL-style data gives them: punctuation inside a word stays in it.
CONLL_SENTENCES = [
    ["@user_1", "RT", "Ada", "Lovelace", "met", "Charles", "Babbage", "in", "London", "."],
    ["http://t.co/xyz", "U.S.", "e-mail", "#Paris", "Zoë", "Ünal", "visited", "東京", "!!!"],
    ["x"], ["a\u200bb", "\u200b", "c\x00d", "émigré"], ["short"] * 40,
    ["New", "Orleans", "Mother's", "Day", "(", "2016", ")", ":-)"]]


def _word_level_entities(model, vocab, words, max_len):
    """Entities from the fine-tuning path: `tagged_features`, first-piece tags, `entity_spans`.

    The export truncates where training would open a second window, so only the
    words whose first piece is in the first window are tagged (they are a prefix).
    """
    from keras_bert import tasks
    tok = BertTokenizer.from_vocab(vocab)
    example = tasks.TaggedExample(guid="s", words=tuple(words), tags=None)
    window = tasks.tagged_features(example, tok, max_len)[0]
    x = {k: np.asarray([window.features[k]], "int32") for k in features.ENCODER_INPUTS}
    logits = model(x)["logits"].numpy()[0]
    tags = [NER_TAGS[int(logits[p].argmax())] for p, w in enumerate(window.word_ids) if w >= 0]
    return [(e["type"], e["start"], e["end"], e["text"]) for e in tasks.entity_spans(example, tags)]


def test_ner_export_tags_the_words_training_labelled(ner_model, vocab, tmp_path):
    """Served entities of " ".join(words) == entities of the word-level predictions."""
    result = export.export_saved_model(ner_model, str(tmp_path), "ner", vocab, max_seq_length=MAX_LEN,
                                       labels=NER_TAGS)
    texts = [" ".join(words) for words in CONLL_SENTENCES]
    served = _served_entities(result.path, texts)
    total = 0
    for words, text, got in zip(CONLL_SENTENCES, texts, served):
        assert got == _word_level_entities(ner_model, vocab, words, MAX_LEN), ascii(text)
        for _, start, end, entity in got:
            assert text[start:end] == entity
            # Whole words: an entity never starts or ends inside a whitespace word.
            assert start == 0 or text[start - 1] == " "
            assert end == len(text) or text[end] == " "
        total += len(got)
    assert total > 5
    # Other whitespace than single spaces splits words too; offsets stay in the raw text.
    raw = "Ada\tLovelace  met\n Babbage\u3000in London"
    words = raw.split()
    got = _served_entities(result.path, [raw])[0]
    expected = _word_level_entities(ner_model, vocab, words, MAX_LEN)
    from keras_bert import tasks
    spans = [m.span() for m in re.finditer(r"\S+", raw)]
    joined = tasks.TaggedExample(guid="raw", words=tuple(words)).word_spans
    starts = {s: i for i, (s, _) in enumerate(joined)}
    ends = {e: i for i, (_, e) in enumerate(joined)}
    assert [(t, spans[starts[s]][0], spans[ends[e]][1]) for t, s, e, _ in expected] == \
        [(t, s, e) for t, s, e, _ in got]
    assert all(raw[s:e] == entity for _, s, e, entity in got)


# Long enough for several overlapping windows at MAX_LEN with QA_STRIDE.
_LONG_CONTEXT = " ".join(
    f"In {1900 + i} the société of Montréal built {i} boats near the river." for i in range(12))
QA_CASES = [("Who wrote the notes?", "Ada Lovelace wrote the notes on the Analytical Engine."),
            ("Où est-il né ?", "Il est né à Montréal, près du fleuve Saint-Laurent, en 1970."),
            ("what", "一 二 三 four five"), ("empty context", ""),
            ("a very long question " * 20, "The context is cut off after the question."),
            ("When were the boats built?", _LONG_CONTEXT),
            ("a very long question " * 20, _LONG_CONTEXT)]
QA_STRIDE = 7


def _reference_answer(model, vocab, question, context, max_len, max_query, max_answer, stride):
    """Python path: fine-tuning's windows and post-processing, widened to whole words.

    `tasks.squad_features` cuts the windows, the Keras model scores each one and
    `tasks.squad_nbest` (with every position a candidate) picks the answer.
    """
    from keras_bert import tasks
    tok = BertTokenizer.from_vocab(vocab)
    offsets = tasks.tokenize_with_offsets(tok, context)
    example = tasks.SquadExample("q", question, context)
    windows = tasks.squad_features(example, tok, max_len, stride, max_query, offsets=offsets)
    starts, ends = [], []
    for window in windows:
        n = sum(window.features["input_mask"])
        out = model({k: np.array([window.features[k][:n]], "int32")
                     for k in ("input_ids", "segment_ids", "input_mask")})
        starts.append(np.asarray(out["start_logits"])[0])
        ends.append(np.asarray(out["end_logits"])[0])
    best = tasks.squad_nbest(example, windows, starts, ends, n_best_size=max_len,
                             max_answer_length=max_answer, offsets=offsets)
    if best.best_start is None:
        return "", -1, -1
    words = []  # character span of every word (a token and its ## continuations)
    for i, token in enumerate(offsets.tokens):
        if not (token.startswith("##") and words):
            words.append([offsets.starts[i], offsets.ends[i]])
        words[-1][1] = offsets.ends[i]
    start = next(s for s, e in words if s <= best.best_start < e)
    end = next(e for s, e in words if s < best.best_end <= e)
    return context[start:end], start, end


def test_export_takes_only_the_task_registry_names(ner_model, vocab, tmp_path):
    for retired in ("token_classification", "span_qa", "token_classifier"):
        with pytest.raises(export.ExportError, match="unknown task"):
            export.export_saved_model(ner_model, str(tmp_path), "x", vocab, task=retired,
                                      labels=NER_TAGS)
    # The registry says which head a task needs.
    with pytest.raises(export.ExportError, match="needs a 'span_qa' model"):
        export.export_saved_model(ner_model, str(tmp_path), "x", vocab, task="squad2")
    assert not os.path.exists(tmp_path / "x")


def test_qa_export_gives_the_python_answer_with_character_offsets(vocab, tmp_path):
    size = sum(1 for _ in open(vocab, encoding="utf-8"))
    tf.keras.utils.set_random_seed(5)
    model = checkpoints.build_model(BertConfig.preset("tiny", vocab_size=size, max_position_embeddings=64),
                                    "span_qa")
    result = export.export_saved_model(model, str(tmp_path), "qa", vocab, max_seq_length=MAX_LEN,
                                       max_query_length=16, max_answer_length=5,
                                       doc_stride=QA_STRIDE)
    assert result.task == "squad1"
    loaded = tf.saved_model.load(result.path)
    sig = loaded.signatures["serving_default"]
    assert set(sig.structured_input_signature[1]) == {"text", "text_b"}
    out = {k: v.numpy() for k, v in sig(text=tf.constant([q for q, _ in QA_CASES]),
                                        text_b=tf.constant([c for _, c in QA_CASES])).items()}
    for b, (question, context) in enumerate(QA_CASES):
        want = _reference_answer(model, vocab, question, context, MAX_LEN, 16, 5, QA_STRIDE)
        got = (out["answer_text"][b].decode("utf-8"), int(out["answer_start"][b]),
               int(out["answer_end"][b]))
        assert got == want, (question, context)
        if want[1] >= 0:
            assert context[want[1]:want[2]] == want[0] and want[0]
    serving_ops = pytest.importorskip("tests.serving_ops")
    assert serving_ops.check_ops(result.path) == []


def _pointing_qa_model(vocab, word):
    """A span-QA model whose start and end logits are 8 on `word` and 0 elsewhere.

    Every embedding but `word`'s and every transformer output projection are zero,
    so each position's final hidden state is `word`'s normalized embedding or zero,
    whatever its neighbours or position; the QA head reads one coordinate of it.
    """
    tok = BertTokenizer.from_vocab(vocab)
    (word_id,) = tok.convert_tokens_to_ids([word])
    size = sum(1 for _ in open(vocab, encoding="utf-8"))
    model = checkpoints.build_model(BertConfig.preset("tiny", vocab_size=size,
                                                      max_position_embeddings=64), "span_qa")
    for variable in model.weights:
        value = np.ones(variable.shape) if variable.path.endswith("gamma") else \
            np.zeros(variable.shape)
        if variable.path.endswith("word_embeddings/embeddings"):
            value[word_id, :2] = (4.0, -4.0)  # layer norm: (8, -8, 0, ...)
        elif variable.path.endswith("qa_outputs/kernel"):
            value[0, :] = 1.0
        variable.assign(value.astype(variable.dtype))
    return model


def test_qa_export_answers_from_the_third_window_at_whole_context_offsets(vocab, tmp_path):
    from serving import client
    from serving.server import ModelServer, parse_options
    model = _pointing_qa_model(vocab, "red")
    # 3 question pieces leave 26 - 3 - 3 = 20 context pieces per window; windows start
    # at pieces 0, 10 and 20 of the 40, and only the third one holds piece 35.
    words = ["the", "man", "is", "near"] * 10
    words[35] = "red"
    context = " ".join(words)
    question = "where is red"
    export.export_saved_model(model, str(tmp_path), "qa", vocab, max_seq_length=26,
                              max_query_length=16, max_answer_length=4, doc_stride=10, version=1)
    start = context.index(" red ") + 1
    want = ("red", start, start + 3)
    assert context.count("red") == 1 and start > 100  # far beyond the first window's text
    # Served by the model server (which loads it with `tf.saved_model.load`; in this
    # process: no second TensorFlow start-up), over gRPC, in one batch with a short
    # context.
    server = ModelServer(parse_options(["--port=0", "--model_name=qa",
                                        f"--model_base_path={tmp_path / 'qa'}",
                                        "--file_system_poll_wait_seconds=0"]))
    server.start()
    try:
        out = client.predict_text(f"localhost:{server.grpc_port}", "qa", [question, question],
                                  [context, "the red man"])
    finally:
        server.stop(0)
    got = [(out["answer_text"][i].decode(), int(out["answer_start"][i]), int(out["answer_end"][i]))
           for i in range(2)]
    assert got == [want, ("red", 4, 7)]
    assert float(out["score"][0]) == pytest.approx(16.0, abs=1e-3)


@pytest.mark.parametrize("task", ["classification", "fill_mask"])
def test_frozen_weights_export_equals_the_variables_export(exported, vocab, tmp_path, task):
    """The default export keeps its weights as graph constants: no variables, each
    weight stored once (about the size of the variables export), and the variables
    export's outputs on every signature (labels, ids and tokens exactly, scores to
    float rounding)."""
    model, frozen = exported[task]
    labels = ["neg", "neutral", "pos"] if task == "classification" else None
    plain = export.export_saved_model(model, str(tmp_path), task, vocab, max_seq_length=MAX_LEN,
                                      labels=labels, freeze_weights=False)

    def size(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
                   for f in files)

    loaded = {"frozen": tf.saved_model.load(frozen.path), "plain": tf.saved_model.load(plain.path)}
    variables = {k: os.listdir(os.path.join(p.path, "variables")) if os.path.isdir(
        os.path.join(p.path, "variables")) else [] for k, p in (("frozen", frozen), ("plain", plain))}
    from tensorflow.python.training import py_checkpoint_reader

    def weights(result):
        reader = py_checkpoint_reader.NewCheckpointReader(
            os.path.join(result.path, "variables", "variables"))
        return sum(1 for name in reader.get_variable_to_shape_map() if "VARIABLE_VALUE" in name)

    assert variables["plain"] and weights(plain) >= len(model.weights)
    assert weights(frozen) == 0
    # No custom-gradient ops (GELU's) in the serving graph: loading it never warns.
    with open(os.path.join(frozen.path, "saved_model.pb"), "rb") as f:
        assert b"_gradient_op_type" not in f.read()
    assert size(frozen.path) < 1.2 * size(plain.path)
    texts = ["The [MASK] brown fox.", "Café naïve résumé"] if task == "fill_mask" else TEXTS
    for name in ("serving_default", "embed"):
        a, b = (loaded[k].signatures[name](text=tf.constant(texts)) for k in ("frozen", "plain"))
        assert sorted(a) == sorted(b)
        for key in a:
            x, y = a[key].numpy(), b[key].numpy()
            if x.dtype.kind == "f":  # oneDNN may sum a constant weight in another order
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"{name}/{key}")
            else:
                np.testing.assert_array_equal(x, y, err_msg=f"{name}/{key}")
