"""Tests of keras_bert.tokenizer against Hugging Face goldens and hand-worked cases.

Goldens (`tests/fixtures/tokenizer/golden.json`) come from
`tests/fixtures/make_tokenizer_golden.py`: Hugging Face's pure-Python BERT
tokenizer set up as google-research/bert's (special-token strings split like any
text, 200-character word limit, no NFC pre-pass; see the script's docstring).
"""

import json
import os
import pathlib
import random
import unicodedata

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as tf_text

from keras_bert import features
from keras_bert import tokenizer as tokenization
from keras_bert.tokenizer import (
    BertTokenizer,
    InGraphBertTokenizer,
    TokenizerInputError,
    VocabularyError,
    truncated_pair_lengths,
)

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"
VARIANTS = ("uncased", "cased")


@pytest.fixture(scope="module")
def golden():
    with open(FIXTURES / "golden.json", encoding="utf-8") as f:
        return json.load(f)


def _vocab_path(variant):
    return str(FIXTURES / f"vocab_{variant}.txt")


@pytest.fixture(scope="module")
def py_tokenizers():
    return {v: BertTokenizer.from_vocab(_vocab_path(v), do_lower_case=v == "uncased")
            for v in VARIANTS}


@pytest.fixture(scope="module")
def tf_tokenizers():
    return {v: InGraphBertTokenizer(_vocab_path(v), do_lower_case=v == "uncased")
            for v in VARIANTS}


def _write_vocab(tmp_path, tokens, name="vocab.txt"):
    path = tmp_path / name
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return str(path)


# A hand-made vocabulary for hand-worked examples.
TINY_VOCAB = list(features.SPECIAL_TOKENS) + [
    "un", "##aff", "##able", "hello", "world", ",", "!", "a", "b", "c", "##b", "##c",
    "the", "cat", "sat", "##s", "中", "x", "##x",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = _write_vocab(tmp_path_factory.mktemp("tiny"), TINY_VOCAB)
    return BertTokenizer.from_vocab(path), InGraphBertTokenizer(path)


# ---------------------------------------------------------------------------
# Goldens.
# ---------------------------------------------------------------------------


def test_fixture_vocabularies_are_realistic(golden):
    for variant in VARIANTS:
        tokens = tokenization.load_vocab(_vocab_path(variant))
        assert tokens[:5] == list(features.SPECIAL_TOKENS)
        assert 3000 <= len(tokens) == golden["variants"][variant]["vocab_size"]
        assert sum(t.startswith("##") for t in tokens) > 300
        assert any(tokenization.is_cjk_char(t[0]) for t in tokens if t)
    assert "Café" in tokenization.load_vocab(_vocab_path("cased"))
    assert len(golden["texts"]) >= 50 and len(golden["fuzz_texts"]) == 300


@pytest.mark.parametrize("variant", VARIANTS)
def test_python_matches_golden_tokens_and_ids(golden, py_tokenizers, variant):
    tok = py_tokenizers[variant]
    cases = golden["variants"][variant]["cases"]
    for text, case in zip(golden["texts"], cases, strict=True):
        tokens = tok.tokenize(text)
        assert tokens == case["tokens"], ascii(text)
        assert tok.convert_tokens_to_ids(tokens) == case["ids"], ascii(text)


@pytest.mark.parametrize("variant", VARIANTS)
def test_python_matches_golden_on_random_texts(golden, py_tokenizers, variant):
    tok = py_tokenizers[variant]
    expected = golden["variants"][variant]["fuzz_ids"]
    for text, ids in zip(golden["fuzz_texts"], expected, strict=True):
        assert tok.convert_tokens_to_ids(tok.tokenize(text)) == ids, ascii(text)


@pytest.mark.parametrize("variant", VARIANTS)
def test_in_graph_matches_golden_and_python(golden, py_tokenizers, tf_tokenizers, variant):
    texts = golden["texts"] + golden["fuzz_texts"]
    data = golden["variants"][variant]
    expected = [c["ids"] for c in data["cases"]] + data["fuzz_ids"]
    got = tf_tokenizers[variant].tokenize(tf.constant(texts)).to_list()
    py = py_tokenizers[variant]
    for text, ids, want in zip(texts, got, expected, strict=True):
        assert ids == want, ascii(text)
        assert ids == py.convert_tokens_to_ids(py.tokenize(text)), ascii(text)


@pytest.mark.parametrize("variant", VARIANTS)
def test_encode_matches_golden_pairs(golden, py_tokenizers, tf_tokenizers, variant):
    names = (features.INPUT_IDS, features.SEGMENT_IDS, features.INPUT_MASK)
    for pair in golden["variants"][variant]["pairs"]:
        text, text_b, length = pair["text"], pair["text_b"], pair["max_seq_length"]
        got = py_tokenizers[variant].encode(text, text_b, max_seq_length=length)
        graph = tf_tokenizers[variant].encode(
            tf.constant([text]), None if text_b is None else tf.constant([text_b]),
            max_seq_length=length)
        for name in names:
            assert got[name] == pair[name], (pair, name)
            assert graph[name].numpy()[0].tolist() == pair[name], (pair, name)


def test_hugging_face_nfc_difference_is_documented(golden, py_tokenizers):
    """Stock HF composes text with NFC first; the original (and we) do not.

    Only the cased vocabulary sees it: decomposed accents stay two characters, and
    U+2126 OHM SIGN is not turned into U+03A9 OMEGA.
    """
    texts = golden["texts"]
    differs = {texts[i] for i, c in enumerate(golden["variants"]["cased"]["cases"])
               if "hf_stock_tokens" in c}
    assert differs == {"cafe\u0301 re\u0301sume\u0301 nai\u0308ve", "\u2126 \u03a9 \u212b \u00c5"}
    assert not any("hf_stock_tokens" in c for c in golden["variants"]["uncased"]["cases"])
    cased = py_tokenizers["cased"]
    assert cased.tokenize("cafe\u0301")[:2] == ["cafe", "##\u0301"]
    assert cased.tokenize("\u2126 \u03a9") == ["[UNK]", "\u03a9"]


# ---------------------------------------------------------------------------
# Rules of the original, by hand.
# ---------------------------------------------------------------------------


def test_hand_worked_tokenization(tiny):
    py, graph = tiny
    cases = {
        "unaffable": ["un", "##aff", "##able"],
        "UNAFFABLE, Hello!": ["un", "##aff", "##able", ",", "hello", "!"],
        "abc": ["a", "##b", "##c"],
        "abd": ["[UNK]"],  # cannot be fully pieced: the whole word is [UNK]
        "the\u200bcat sat": ["[UNK]", "sat"],  # zero-width space is deleted, joining words
        "the\u3000cat\u2028sats": ["the", "cat", "sat", "##s"],
        "x中x": ["x", "中", "x"],
        "Hélló": ["hello"],
        "": [],
        "\u200b\x00 \t": [],
        "x" * 200: ["x"] + ["##x"] * 199,
        "x" * 201: ["[UNK]"],
        "[MASK]": ["[UNK]", "[UNK]", "[UNK]"],  # "[", "mask", "]" are not in this vocab
    }
    for text, tokens in cases.items():
        assert py.tokenize(text) == tokens, text
    ids = graph.tokenize(tf.constant(list(cases))).to_list()
    for (text, tokens), row in zip(cases.items(), ids):
        assert row == py.convert_tokens_to_ids(tokens), text


def test_words_are_grouped_for_whole_word_masking(tiny):
    py, graph = tiny
    text = "unaffable cat, abd"
    assert py.tokenize_words(text) == [["un", "##aff", "##able"], ["cat"], [","], ["[UNK]"]]
    words = graph.tokenize_words(tf.constant([text, ""]))
    assert words.shape.rank == 3 and words.dtype == tf.int64
    expected = [[py.convert_tokens_to_ids(w) for w in py.tokenize_words(text)], []]
    assert words.to_list() == expected


def test_character_classes_match_the_original_predicates():
    classes = tokenization.char_class_ranges()

    def members(ranges):
        return {cp for lo, hi in ranges for cp in range(lo, hi + 1)}

    removed = members(classes["removed"])
    punct = members(classes["punctuation"])
    space = members(classes["whitespace"])
    for cp in [0, 1, 9, 10, 13, 0x1F, 0x7F, 0x85, 0xAD, 0x200B, 0x200D, 0xFEFF, 0xFFFD, 0xE0001]:
        assert (cp in removed) == (cp not in (9, 10, 13)), hex(cp)
    for ch in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡«»‘’“”„‹›、。！？—":
        assert ord(ch) in punct, ch
    for ch in "aZ09 é中½²①😀$":
        assert (ord(ch) in punct) == (ch in "$"), ch
    for ch in " \t\n\r\u00a0\u2000\u3000\u2028\u2029":
        assert ord(ch) in space
    assert ord("\u200b") not in space and ord("a") not in space
    # Every code point, against the predicates as the original states them.
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        cat = unicodedata.category(ch)
        control = cat in ("Cc", "Cf") and ch not in "\t\n\r"
        assert (cp in removed) == (cp in (0, 0xFFFD) or control)
        ascii_punct = 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
        assert (cp in punct) == (ascii_punct or cat.startswith("P"))
        assert (cp in space) == ch.isspace()


def test_every_code_point_matches_between_python_and_graph(py_tokenizers, tf_tokenizers):
    """Python and graph agree on all 1.1M code points, up to ICU's Unicode tables.

    Each code point is tokenized in context ("a{c}B{c} ") by both tokenizers.
    Words may differ only for characters where TensorFlow's ICU lowercasing or NFD
    differs from Python's (characters new in Unicode 14+, or unassigned in
    Python's tables); and even those give the same ids with these vocabularies.
    """
    cps = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    chunks = ["a%sB%s " % (chr(cp), chr(cp)) for cp in cps]
    size = 2048
    texts = ["".join(chunks[i:i + size]) for i in range(0, len(chunks), size)]
    for variant in VARIANTS:
        py, graph = py_tokenizers[variant], tf_tokenizers[variant]
        words = graph.basic_tokenize(tf.constant(texts))
        # The fast path (tokenize) splits words its own way: its ids must be those
        # of the words checked here, on every code point too.
        fast_ids = graph.tokenize(tf.constant(texts)).to_list()
        word_ids = graph._wordpieces(words).merge_dims(1, 2).to_list()
        words = words.to_list()
        suspects = [cp for i, (text, got, ids, want) in enumerate(
                        zip(texts, words, fast_ids, word_ids))
                    if ids != want or got != [w.encode() for w in py.basic_tokenize(text)]
                    for cp in cps[i * size:(i + 1) * size]]
        one_each = ["a%sB%s " % (chr(cp), chr(cp)) for cp in suspects]
        got = graph.basic_tokenize(tf.constant(one_each, tf.string)).to_list()
        one_ids = graph.tokenize(tf.constant(one_each, tf.string)).to_list()
        want_ids = [py.convert_tokens_to_ids(py.tokenize(t)) for t in one_each]
        assert one_ids == want_ids
        assert py.token_ids_batch(one_each) == want_ids
        bad = [cp for cp, text, row in zip(suspects, one_each, got)
               if row != [w.encode() for w in py.basic_tokenize(text)]]
        if variant == "cased":
            assert bad == []
            continue
        assert 0 < len(bad) <= 100
        chars = tf.constant([chr(cp).encode() for cp in bad], tf.string)
        icu_lower = tf.strings.lower(chars, encoding="utf-8").numpy()
        icu_nfd = tf_text.normalize_utf8(chars, "NFD").numpy()
        for cp, low, nfd in zip(bad, icu_lower, icu_nfd):
            ch = chr(cp)
            assert (low.decode() != ch.lower()
                    or nfd.decode() != unicodedata.normalize("NFD", ch)), hex(cp)
        bad_texts = ["a%sB%s " % (chr(cp), chr(cp)) for cp in bad]
        ids = graph.tokenize(tf.constant(bad_texts)).to_list()
        assert ids == [py.convert_tokens_to_ids(py.tokenize(t)) for t in bad_texts]


def test_lowercasing_is_python_lower_not_case_folding(py_tokenizers, tf_tokenizers):
    # Final sigma: "." is case-ignorable, so "ΑΣ.Α" keeps a medial sigma.
    # Lowercasing runs per word in Python and on the whole text in the graph: the
    # context ends at separators (U+2028, CJK) but not at deleted characters (ZWSP).
    texts = ["Straße", "ＡＢＣ", "ﬁ", "İ", "ΟΔΥΣΣΕΥΣ ΑΣ. ΑΣ.Α", "ΑΣ\u2028Β ΑΣ\u200bΒ ΑΣ中"]
    py = py_tokenizers["uncased"]
    words = tf_tokenizers["uncased"].basic_tokenize(tf.constant(texts)).to_list()
    expected = [["straße"], ["ａｂｃ"], ["ﬁ"], ["i"], ["οδυσσευς", "ας", ".", "ασ", ".", "α"],
                ["ας", "β", "ασβ", "ας", "中"]]
    for text, got, want in zip(texts, words, expected):
        assert py.basic_tokenize(text) == want
        assert [w.decode() for w in got] == want


def test_cased_keeps_case_and_accents(py_tokenizers):
    tok = py_tokenizers["cased"]
    assert tok.basic_tokenize("Café ÜBER") == ["Café", "ÜBER"]
    assert tok.basic_tokenize("cafe\u0301") == ["cafe\u0301"]
    assert tok.tokenize("Café") == ["Café"]


# ---------------------------------------------------------------------------
# encode: truncation and padding.
# ---------------------------------------------------------------------------


def _truncate_loop(len_a, len_b, max_tokens):
    """The original `_truncate_seq_pair`, on lists."""
    a, b = list(range(len_a)), list(range(len_b))
    while len(a) + len(b) > max_tokens:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    return len(a), len(b)


def test_truncation_closed_form_matches_the_loop():
    triples = [(a, b, m) for a in range(0, 41) for b in range(0, 41) for m in range(0, 31)]
    for a, b, m in triples:
        assert truncated_pair_lengths(a, b, m) == _truncate_loop(a, b, m), (a, b, m)
    la = tf.constant([t[0] for t in triples], tf.int64)
    lb = tf.constant([t[1] for t in triples], tf.int64)
    for m in (0, 1, 2, 7, 30):
        sel = [i for i, t in enumerate(triples) if t[2] == m]
        new_a, new_b = tokenization._truncated_pair_lengths_tf(
            tf.gather(la, sel), tf.gather(lb, sel), m)
        want = [_truncate_loop(*triples[i]) for i in sel]
        assert list(zip(new_a.numpy().tolist(), new_b.numpy().tolist())) == want


def test_encode_hand_worked(tiny):
    py, graph = tiny
    v = {t: i for i, t in enumerate(TINY_VOCAB)}
    cls, sep = v["[CLS]"], v["[SEP]"]
    # a = un ##aff ##able (3), b = the cat sat (3); room for 8 - 3 = 5: pop b, then a.
    out = py.encode("unaffable", "the cat sat", max_seq_length=8)
    assert out["input_ids"] == [cls, v["un"], v["##aff"], v["##able"], sep, v["the"], v["cat"], sep]
    assert out["segment_ids"] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert out["input_mask"] == [1] * 8
    # Room for 4: a=3,b=3 -> pop b (tie) -> a=3,b=2 -> pop a -> 2,2.
    out = py.encode("unaffable", "the cat sat", max_seq_length=7)
    assert out["input_ids"] == [cls, v["un"], v["##aff"], sep, v["the"], v["cat"], sep]
    # Longer a is cut first: a = 1 word of 3 pieces vs b = "a": a -> 2.
    out = py.encode("unaffable", "a", max_seq_length=6)
    assert out["input_ids"] == [cls, v["un"], v["##aff"], sep, v["a"], sep]
    # Single text: cut to max_seq_length - 2, then padded with [PAD] = 0.
    out = py.encode("unaffable cat", max_seq_length=4)
    assert out["input_ids"] == [cls, v["un"], v["##aff"], sep]
    out = py.encode("cat", max_seq_length=6)
    assert out == {"input_ids": [cls, v["cat"], sep, 0, 0, 0],
                   "segment_ids": [0] * 6, "input_mask": [1, 1, 1, 0, 0, 0]}
    # No max_seq_length: no truncation, no padding.
    out = py.encode("cat", "sat")
    assert out == {"input_ids": [cls, v["cat"], sep, v["sat"], sep],
                   "segment_ids": [0, 0, 0, 1, 1], "input_mask": [1] * 5}
    # Empty texts give [CLS] [SEP] only, in both paths.
    assert py.encode("", max_seq_length=3)["input_ids"] == [cls, sep, 0]
    g = graph.encode(tf.constant(["", "\u200b", "cat"]), max_seq_length=3)
    assert g["input_ids"].numpy().tolist() == [[cls, sep, 0], [cls, sep, 0], [cls, v["cat"], sep]]


def test_encode_random_pairs_python_equals_graph(golden, py_tokenizers, tf_tokenizers):
    rng = random.Random(7)
    texts = golden["texts"] + golden["fuzz_texts"]
    a = [rng.choice(texts) for _ in range(120)]
    b = [rng.choice(texts) for _ in range(120)]
    for variant in VARIANTS:
        py, graph = py_tokenizers[variant], tf_tokenizers[variant]
        for length in (3, 5, 16, 64):
            want = py.encode_batch(a, b, max_seq_length=length)
            got = graph.encode(tf.constant(a), tf.constant(b), max_seq_length=length)
            for name, array in want.items():
                assert array.shape == (len(a), length)
                np.testing.assert_array_equal(got[name].numpy(), array)
        want = py.encode_batch(a, max_seq_length=32)
        got = graph.encode(tf.constant(a), max_seq_length=32, dtype=tf.int64)
        for name, array in want.items():
            assert got[name].dtype == tf.int64
            np.testing.assert_array_equal(got[name].numpy(), array)


def test_encode_batch_shapes_and_types(tiny):
    py, _ = tiny
    out = py.encode_batch(["cat", "the cat sat"])
    assert out["input_ids"] == [py.encode(t)["input_ids"] for t in ("cat", "the cat sat")]
    arrays = py.encode_batch(["cat", b"the cat sat"], ["sat", None], max_seq_length=6)
    assert arrays["input_ids"].dtype == np.int32 and arrays["input_ids"].shape == (2, 6)
    assert arrays["segment_ids"].tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]]
    empty = py.encode_batch([], max_seq_length=5)
    assert empty["input_ids"].shape == (0, 5)
    with pytest.raises(ValueError, match="texts_b has 1 entries"):
        py.encode_batch(["a", "b"], ["c"])
    with pytest.raises(ValueError, match=">= 3"):
        py.encode("a", "b", max_seq_length=2)


# ---------------------------------------------------------------------------
# API surface, bad input, graph use.
# ---------------------------------------------------------------------------


def test_properties_and_conversions(tiny):
    py, graph = tiny
    for tok in (py, graph):
        assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
        assert tok.vocab_size == len(TINY_VOCAB) and tok.do_lower_case is True
        assert tok.vocab_path.endswith("vocab.txt")
    assert py.vocab["##aff"] == TINY_VOCAB.index("##aff")
    assert py.convert_tokens_to_ids(["un", "nope"]) == [5, 1]
    assert py.convert_ids_to_tokens([5, 6]) == ["un", "##aff"]
    with pytest.raises(ValueError, match=r"ids\[1\] = 999"):
        py.convert_ids_to_tokens([0, 999])


def test_python_bad_input():
    tok = BertTokenizer(TINY_VOCAB)
    with pytest.raises(TypeError, match="text is None"):
        tok.tokenize(None)
    with pytest.raises(TypeError, match="text is None"):
        tok.encode(None, "b")
    with pytest.raises(TypeError, match="text_b is a int"):
        tok.encode("a", 5)
    with pytest.raises(TypeError, match=r"texts\[1\] is None"):
        tok.encode_batch(["a", None])
    with pytest.raises(TypeError, match=r"texts_b\[0\] is a int"):
        tok.encode_batch(["a"], [3])
    assert tok.tokenize("cat".encode()) == ["cat"]
    assert tok.tokenize("中".encode("utf-8")) == ["中"]
    with pytest.raises(TokenizerInputError,
                       match=r"texts\[2\] is not valid UTF-8: .* byte offset 3"):
        tok.encode_batch(["a", "b", b"abc\xff"])
    with pytest.raises(ValueError, match="byte offset 1"):
        tok.tokenize(b"a\xed\xa0\x80")  # an encoded surrogate is not UTF-8


def test_graph_rejects_invalid_utf8(tiny):
    _, graph = tiny
    bad = tf.constant([b"fine", b"ab\xffcd"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="invalid UTF-8"):
        graph.tokenize(bad)
    fn = tf.function(lambda t: graph.encode(t, max_seq_length=8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="invalid UTF-8"):
        fn(bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="texts_b holds invalid UTF-8"):
        graph.encode(tf.constant(["a", "b"]), bad, max_seq_length=8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="as many entries"):
        graph.encode(tf.constant(["a", "b"]), tf.constant(["c"]), max_seq_length=8)
    with pytest.raises(ValueError, match=r"shape \[batch\]"):
        graph.tokenize(tf.constant("scalar"))


def test_graph_in_tf_function_tf_data_and_empty_batch(tiny):
    py, graph = tiny
    texts = ["the cat sat", "", "Hello, world!", "unaffable"]
    want = py.encode_batch(texts, max_seq_length=8)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def encode(t):
        return graph.encode(t, max_seq_length=8)

    np.testing.assert_array_equal(encode(tf.constant(texts))["input_ids"].numpy(),
                                  want["input_ids"])
    empty = encode(tf.constant([], tf.string))
    assert empty["input_ids"].shape == (0, 8)
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(3).map(
        lambda t: graph.encode(t, max_seq_length=8))
    got = np.concatenate([b["input_ids"].numpy() for b in ds])
    np.testing.assert_array_equal(got, want["input_ids"])


# Ops a SavedModel of the tokenizer may contain: all exist in TF/TF-Text 2.12.
OPS_2_12 = {
    "AddV2", "All", "Assert", "AssignVariableOp", "BroadcastTo", "Cast", "ConcatV2", "Const",
    "Cumsum", "Equal", "ExpandDims", "FastWordpieceTokenizeWithOffsets", "Fill", "FloorDiv",
    "GatherV2", "Greater", "HashTableV2", "Identity", "If", "InitializeTableFromTextFileV2",
    "Less", "LessEqual", "LogicalAnd", "LogicalNot", "LogicalOr", "LookupTableFindV2", "Max",
    "Maximum", "MergeV2Checkpoints", "Minimum", "Mul", "NoOp", "NormalizeUTF8", "OnesLike",
    "Pack", "Placeholder", "Prod", "RaggedGather", "RaggedRange", "RaggedTensorToTensor",
    "Range", "ReadVariableOp", "RegexSplitWithOffsets", "Reshape", "RestoreV2", "SaveV2",
    "ScatterNd", "Select", "SelectV2", "Shape", "ShardedFilename", "Size", "Squeeze",
    "StatefulPartitionedCall", "StatelessIf", "StaticRegexFullMatch", "StaticRegexReplace",
    "StridedSlice", "StringJoin", "StringLength", "StringLower", "Sub", "TensorScatterUpdate",
    "UpperBound",
    "Tile", "Transpose", "UnicodeTranscode", "UnsortedSegmentSum", "VarHandleOp",
    "VarIsInitializedOp", "Where", "WordpieceTokenizeWithOffsets", "ZerosLike",
}


def test_op_list_is_within_the_generated_tf_2_12_allowlist():
    from tests import serving_ops

    assert OPS_2_12 <= serving_ops.load_allowlist(), sorted(OPS_2_12 - serving_ops.load_allowlist())


def test_saved_model_export_with_vocab_asset(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    class Export(tf.Module):
        def __init__(self):
            super().__init__()
            self.tokenizer = InGraphBertTokenizer(_vocab_path("uncased"))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)] * 2)
        def serve(self, text, text_b):
            return self.tokenizer.encode(text, text_b, max_seq_length=16)

    export_dir = str(tmp_path / "model")
    module = Export()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
    assert os.listdir(os.path.join(export_dir, "assets")) == ["vocab_uncased.txt"]
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    ops = {n.op for g in proto.meta_graphs for n in g.graph_def.node}
    ops |= {n.op for g in proto.meta_graphs for f in g.graph_def.library.function
            for n in f.node_def}
    assert ops <= OPS_2_12, sorted(ops - OPS_2_12)

    loaded = tf.saved_model.load(export_dir)
    texts, texts_b = ["Hello, World!", ""], ["def f(x): return x", "中文"]
    got = loaded.signatures["serving_default"](text=tf.constant(texts), text_b=tf.constant(texts_b))
    want = BertTokenizer.from_vocab(_vocab_path("uncased")).encode_batch(
        texts, texts_b, max_seq_length=16)
    for name in (features.INPUT_IDS, features.SEGMENT_IDS, features.INPUT_MASK):
        np.testing.assert_array_equal(got[name].numpy(), want[name])


def test_vocabulary_errors(tmp_path):
    with pytest.raises(VocabularyError, match="already appears on line 6"):
        tokenization.load_vocab(_write_vocab(tmp_path, TINY_VOCAB + ["un"], "dup.txt"))
    with pytest.raises(VocabularyError, match=r"\[MASK\]"):
        tokenization.load_vocab(_write_vocab(tmp_path, TINY_VOCAB[:4] + ["x"], "nomask.txt"))
    padded = _write_vocab(tmp_path, TINY_VOCAB + [" spaced "], "spaced.txt")
    assert BertTokenizer.from_vocab(padded).vocab["spaced"] == len(TINY_VOCAB)
    with pytest.raises(VocabularyError, match="whitespace around its token"):
        InGraphBertTokenizer(padded)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes("\r\n".join(TINY_VOCAB).encode() + b"\r\n")
    graph = InGraphBertTokenizer(str(crlf))
    assert graph.tokenize(tf.constant(["unaffable"])).to_list() == [[5, 6, 7]]
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("\n".join(TINY_VOCAB).encode() + b"\ncaf\xe9\n")
    with pytest.raises(VocabularyError, match="line 25 is not valid UTF-8"):
        tokenization.load_vocab(str(bad))


@pytest.mark.parametrize("variant", VARIANTS)
def test_word_offsets_give_the_same_words_and_spans_into_the_raw_text(golden, tf_tokenizers,
                                                                       py_tokenizers, variant):
    texts = golden["texts"] + golden["fuzz_texts"]
    tok = tf_tokenizers[variant]
    ids, starts, ends = tok.tokenize_words_with_offsets(tf.constant(texts))
    assert ids.to_list() == tok.tokenize_words(tf.constant(texts)).to_list()
    py = py_tokenizers[variant]
    for text, word_ids, s, e in zip(texts, ids.to_list(), starts.to_list(), ends.to_list()):
        raw = text.encode("utf-8")
        assert len(word_ids) == len(s) == len(e)
        assert all(0 <= a < b <= len(raw) for a, b in zip(s, e)), ascii(text)
        assert s == sorted(s), ascii(text)
        # Each span, tokenized alone, holds its word (or, rarely, a run of words
        # that normalization split out of one raw piece).
        for pieces, a, b in zip(word_ids, s, e):
            alone = py.convert_tokens_to_ids(py.tokenize(raw[a:b].decode("utf-8")))
            assert pieces == alone[: len(pieces)] or pieces in [alone[i:i + len(pieces)]
                                                               for i in range(len(alone))], ascii(text)


# ---------------------------------------------------------------------------
# The fast paths: in-graph FastWordpiece and the Python batch API.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_python_batch_path_equals_per_text_path(golden, py_tokenizers, variant):
    py = py_tokenizers[variant]
    texts = golden["texts"] + golden["fuzz_texts"]
    want = [py.convert_tokens_to_ids(py.tokenize(t)) for t in texts]
    assert py.token_ids_batch(texts) == want
    assert py.token_ids_batch([t.encode("utf-8") for t in texts]) == want
    # Chunked batches, bytes and str mixed, lone surrogates (not UTF-8 encodable).
    mixed = [t.encode("utf-8") if i % 3 == 0 else t for i, t in enumerate(texts)] + ["ab\ud800cd"]
    assert py._ids_batch(mixed, [f"texts[{i}]" for i in range(len(mixed))], chunk_size=7) == (
        want + [py.convert_tokens_to_ids(py.tokenize("ab\ud800cd"))])
    assert py.token_ids_batch([]) == []
    # encode_batch goes through the batch path: equal to encode text by text.
    rng = random.Random(3)
    a = [rng.choice(texts) for _ in range(60)]
    b = [rng.choice(texts + [None]) for _ in range(60)]
    for length in (None, 5, 32):
        got = py.encode_batch(a, b, max_seq_length=length)
        rows = [py.encode(x, y, max_seq_length=length) for x, y in zip(a, b)]
        for name in (features.INPUT_IDS, features.SEGMENT_IDS, features.INPUT_MASK):
            lists = got[name] if length is None else got[name].tolist()
            assert lists == [row[name] for row in rows]


def test_python_batch_path_names_the_bad_entry():
    tok = BertTokenizer(TINY_VOCAB)
    with pytest.raises(TypeError, match=r"texts\[1\] is None"):
        tok.token_ids_batch(["a", None])
    with pytest.raises(TypeError, match=r"texts\[2\] is a int"):
        tok.token_ids_batch(["a", b"b", 7])
    with pytest.raises(TokenizerInputError,
                       match=r"texts\[1\] is not valid UTF-8: .* byte offset 1"):
        tok.token_ids_batch([b"ok", b"a\xed\xa0\x80"])
    with pytest.raises(TypeError, match="single text"):
        tok.token_ids_batch("cat")
    with pytest.raises(TokenizerInputError, match=r"texts_b\[1\] is not valid UTF-8"):
        tok.encode_batch(["a", "b"], [None, b"\xff"])


def test_python_batch_path_survives_pickling(tiny):
    import pickle

    py, _ = tiny
    assert py.token_ids_batch(["unaffable cat"]) == [[5, 6, 7, 18]]
    clone = pickle.loads(pickle.dumps(py))
    assert clone.token_ids_batch(["unaffable cat", "abd"]) == [[5, 6, 7, 18], [1]]


def test_fast_path_sends_long_words_and_odd_characters_to_the_exact_path(tmp_path):
    path = _write_vocab(tmp_path, TINY_VOCAB + ["\u0436", "##\u0436"])
    py, graph = BertTokenizer.from_vocab(path), InGraphBertTokenizer(path)
    odd = chr(tokenization.fast_split_mismatches()[-1][0])
    texts = [
        "the cat",
        "x" * 200 + " cat",  # 200 bytes: the fast kernel
        "x" * 201 + " cat",  # [UNK] on both paths
        "\u0416" * 150 + " cat",  # 150 characters, 300 bytes: pieced, on the exact path
        "\u0436" * 201,  # over 200 characters: [UNK]
        "x\u0301" * 150 + ", sat",  # 450 bytes raw, 150 after accent stripping
        "a" + odd + "b sat",
        "",
        "un" * 150,  # 300 bytes, no "##un": [UNK]
        "sat",
    ]
    want = [py.convert_tokens_to_ids(py.tokenize(t)) for t in texts]
    assert want[3][:3] == [len(TINY_VOCAB), len(TINY_VOCAB) + 1, len(TINY_VOCAB) + 1]
    assert len(want[3]) == 151 and want[4] == [1] and len(want[5]) == 152
    assert graph.tokenize(tf.constant(texts)).to_list() == want
    assert graph.tokenize_words(tf.constant(texts)).to_list() == [
        [py.convert_tokens_to_ids(w) for w in py.tokenize_words(t)] for t in texts]
    assert py.token_ids_batch(texts) == want
    assert graph.tokenize(tf.constant([], tf.string)).to_list() == []
    assert graph.tokenize_words(tf.constant([], tf.string)).to_list() == []


def test_fast_kernel_splits_every_assigned_kept_character_as_python():
    """The kernel's ICU tables differ from Python's only on characters that Python
    does not know (unassigned in its Unicode version) or deletes (controls)."""
    for lo, hi in tokenization.fast_split_mismatches():
        for cp in range(lo, hi + 1):
            ch = chr(cp)
            assert unicodedata.category(ch) == "Cn" or tokenization.is_removed_char(ch), hex(cp)


def test_icu_normalization_mismatches_cover_the_known_differences():
    ranges = tokenization.icu_normalization_mismatches()
    listed = {cp for lo, hi in ranges for cp in range(lo, hi + 1)}
    # Every character unknown to Python is listed; known ones only where ICU differs.
    assert all(cp in listed for cp in range(0x110000)
               if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp)) == "Cn")
    assert ord("a") not in listed and ord("\u00c9") not in listed and ord("\u03a3") not in listed
    known = [cp for cp in listed if unicodedata.category(chr(cp)) != "Cn"]
    chars = tf.constant([chr(cp).encode() for cp in known] or [b""], tf.string)
    icu = tf_text.normalize_utf8(tf.strings.lower(chars, encoding="utf-8"), "NFD").numpy()
    for cp, got in zip(known, icu):
        contexts = ["%s\u03a3" % chr(cp), "\u0391\u03a3%s\u0391" % chr(cp), chr(cp),
                    "a\u0301%s\u0316" % chr(cp)]
        icu_contexts = tf_text.normalize_utf8(
            tf.strings.lower(tf.constant(contexts), encoding="utf-8"), "NFD").numpy()
        assert [c.decode() for c in icu_contexts] != [
            unicodedata.normalize("NFD", c.lower()) for c in contexts], hex(cp)


def test_class_search_finds_what_one_regular_expression_finds():
    """The batch path's test for characters left to Python, split at U+FFFF for speed."""
    import re

    ranges = tokenization.icu_normalization_mismatches()
    whole = re.compile(tokenization._python_class(ranges))
    search = tokenization._ClassSearch(ranges)
    edges = {cp for lo, hi in ranges for cp in (lo - 1, lo, hi, hi + 1)}
    edges = [cp for cp in edges if 0 <= cp < 0x110000 and not 0xD800 <= cp <= 0xDFFF]
    rng = random.Random(5)
    texts = ["a" + chr(cp) + "b" for cp in edges] + ["", "plain ascii", "caf\u00e9 \U0001f600"]
    for _ in range(3000):
        texts.append("".join(
            chr(rng.choice([rng.randint(0x20, 0x7F), rng.randint(0x80, 0xD7FF), rng.randint(0x10000, 0x10FFFF)]))
            for _ in range(rng.randint(1, 12))))
    for text in texts:
        assert search.found_in(text) == (whole.search(text) is not None), ascii(text)


def test_utf8_check_accepts_exactly_well_formed_utf8():
    rng = random.Random(11)
    pieces = [b"a", b"\xc3\xa9", b"\xe4\xb8\xad", b"\xf0\x9f\x98\x80", b"\x80", b"\xc0\xaf",
              b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff", b"\xe4\xb8", b"\x00", b"\xef\xbf\xbf",
              b"\xf4\x8f\xbf\xbf", b"\xed\x9f\xbf", b"\xee\x80\x80"]
    data = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(3000)]
    data += [bytes(rng.randrange(256) for _ in range(rng.randint(1, 6))) for _ in range(3000)]

    def valid(b):
        try:
            b.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    got = tf.strings.regex_full_match(tf.constant(data), tokenization._UTF8_TEXT).numpy()
    assert got.tolist() == [valid(b) for b in data]
