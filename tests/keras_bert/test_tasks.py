"""Task conversion and post-processing (keras_bert/tasks.py) without a model.

Uses the tokenizer fixtures' vocabularies (tests/fixtures/tokenizer/); values were
worked out by hand from the original run_classifier.py / run_squad.py rules.
"""

import random

import numpy as np
import pytest

from keras_bert import features as F
from keras_bert import tasks
from keras_bert.tokenizer import BertTokenizer, is_removed_char


@pytest.fixture(scope="module")
def uncased(fixtures_dir):
    return BertTokenizer.from_vocab(str(fixtures_dir / "tokenizer" / "vocab_uncased.txt"), True)


@pytest.fixture(scope="module")
def cased(fixtures_dir):
    return BertTokenizer.from_vocab(str(fixtures_dir / "tokenizer" / "vocab_cased.txt"), False)


TRICKY = [
    "Héllo, wörld!  The\x0bclass\u00adobject (1990).",
    "ΟΔΟΣ σ 中文字 e\u0301t\u00e9 naïve café",
    "unaffable xyzzyq 12,000\tdef\n\r\u2028return",
    "",
    "   ",
    "a\x00b\ufffdc İstanbul ß ﬁne",
]


@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_offsets_tokens_equal_the_tokenizer(which, request):
    tok = request.getfixturevalue(which)
    rng = random.Random(0)
    alphabet = "abcdeéÉ ,.!?-()'\"\t\n中ΣσςİıßAZ0123456789\u0301\u00ad\x0b"
    texts = TRICKY + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
                      for _ in range(300)]
    for text in texts:
        offsets = tasks.tokenize_with_offsets(tok, text)
        assert offsets.tokens == tok.tokenize(text), repr(text)
        assert all(0 <= s < e <= len(text) for s, e in zip(offsets.starts, offsets.ends))
        assert offsets.starts == sorted(offsets.starts)
        for token, s, e in zip(offsets.tokens, offsets.starts, offsets.ends):
            # A token spans the control characters the tokenizer removed inside it.
            original = "".join(c for c in text[s:e] if not is_removed_char(c))
            if token == "[UNK]" or not original.isascii():
                continue
            piece = token[2:] if token.startswith("##") else token
            assert (original.lower() if tok.do_lower_case else original) == piece, (text, token)


def test_offsets_by_hand(uncased):
    text = "Héllo, wörld (1990)."
    o = tasks.tokenize_with_offsets(uncased, text)
    assert o.tokens == ["hello", ",", "wor", "##ld", "(", "1", "##9", "##9", "##0", ")", "."]
    assert [text[s:e] for s, e in zip(o.starts, o.ends)] == [
        "Héllo", ",", "wör", "ld", "(", "1", "9", "9", "0", ")", "."]
    # A combining accent belongs to the character before it; a removed control
    # character joins its neighbours into one word, as the tokenizer does.
    o = tasks.tokenize_with_offsets(uncased, "e\u0301t class\x0bobject")
    assert [(t, s, e) for t, s, e in zip(o.tokens, o.starts, o.ends)][-3:] == [
        ("class", 4, 9), ("##o", 10, 11), ("##bject", 11, 16)]
    # Greek final sigma lower-cases by context: the piece spans its whole word.
    o = tasks.tokenize_with_offsets(uncased, "xx ΟΔΟΣ")
    assert (o.tokens[-1], o.starts[-1], o.ends[-1]) == ("[UNK]", 3, 7)


def test_text_features(uncased):
    example = tasks.TextExample("f:1", "The class object", "is here", "b")
    out = tasks.text_features(example, uncased, 8, {"a": 0, "b": 1})
    assert out[F.LABEL_IDS] == [1]
    assert out == {**uncased.encode("The class object", "is here", max_seq_length=8),
                   F.LABEL_IDS: [1]}
    assert uncased.convert_ids_to_tokens(out[F.INPUT_IDS]) == [
        "[CLS]", "the", "class", "object", "[SEP]", "is", "here", "[SEP]"]
    assert out[F.SEGMENT_IDS] == [0, 0, 0, 0, 0, 1, 1, 1]
    regression = tasks.text_features(tasks.TextExample("f:2", "x", label="3.5"), uncased, 6)
    assert regression[F.LABEL_IDS] == [3.5] and regression[F.INPUT_MASK] == [1, 1, 1, 0, 0, 0]
    assert F.LABEL_IDS not in tasks.text_features(tasks.TextExample("f:3", "x"), uncased, 6, {})
    with pytest.raises(tasks.TaskInputError, match=r"f:1: label 'b' is not one of \['a'\]"):
        tasks.text_features(example, uncased, 8, {"a": 0})
    with pytest.raises(tasks.TaskInputError, match="f:4: regression label 'high'"):
        tasks.text_features(tasks.TextExample("f:4", "x", label="high"), uncased, 6)


def test_windows_and_max_context():
    assert tasks.window_spans(10, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 4)]
    assert tasks.window_spans(3, 4, 2) == [(0, 3)]
    assert tasks.window_spans(0, 4, 2) == [(0, 0)]
    assert tasks.window_spans(5, 4, 3) == [(0, 4), (3, 2)]
    # Token 2: window 0 has min(2, 1) = 1 context, window 1 min(0, 3) = 0 -> window 0;
    # token 3: window 0 min(3, 0) = 0, window 1 min(1, 2) = 1 -> window 1.
    owner = tasks.max_context_windows(tasks.window_spans(10, 4, 2), 10)
    assert owner == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]


def test_iob1_and_tag_checks():
    assert tasks.iob1_to_bio(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-PER"]) == [
        "B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-PER"]
    assert tasks.tag_error("B-PER") is None and tasks.tag_error("O") is None
    assert "is not O, B-TYPE or I-TYPE" in tasks.tag_error("PER")
    assert tasks.tag_error("B-") is not None


def test_first_subword_labels(uncased):
    example = tasks.TaggedExample("s:1", ("Alice", "unaffable", "went", "."),
                                  ("B-PER", "O", "O", "O"))
    [window] = tasks.tagged_features(example, uncased, 12, {"O": 0, "B-PER": 1})
    tokens = uncased.convert_ids_to_tokens(window.features[F.INPUT_IDS])
    assert tokens[:10] == ["[CLS]", "ali", "##ce", "una", "##ff", "##able", "we", "##n", "##t", "."]
    assert window.features[F.LABEL_IDS] == [-100, 1, -100, 0, -100, -100, 0, -100, -100, 0,
                                            -100, -100]
    assert window.word_ids == [-1, 0, -1, 1, -1, -1, 2, -1, -1, 3, -1, -1]
    assert window.features[F.INPUT_MASK] == [1] * 11 + [0]
    with pytest.raises(tasks.TaskInputError, match=r"s:1: word 0 \('Alice'\) has tag 'B-PER'"):
        tasks.tagged_features(example, uncased, 12, {"O": 0})
    unlabelled = tasks.tagged_features(tasks.TaggedExample("s:2", ("x",)), uncased, 8)
    assert F.LABEL_IDS not in unlabelled[0].features


def test_long_sentence_windows_merge_to_each_words_best_window(uncased):
    words = tuple(["class", "object"] * 9)  # 18 one-piece words
    tags = tuple(["B-PER", "O"] * 9)
    windows = tasks.tagged_features(tasks.TaggedExample("s", words, tags), uncased, 8,
                                    {"O": 0, "B-PER": 1}, doc_stride=3)
    spans = tasks.window_spans(18, 6, 3)
    assert len(windows) == len(spans) == 5
    owner = tasks.max_context_windows(spans, 18)
    for w, window in enumerate(windows):
        for position, word in enumerate(window.word_ids):
            if word >= 0:
                assert window.owned[position] == (owner[word] == w)
    # Logits that say which window they come from: each word must take its owner's.
    logits = [np.full((8, 2), float(w)) for w in range(len(windows))]
    merged = tasks.merge_window_logits(windows, logits, 18)
    assert merged[:, 0].tolist() == owner
    with pytest.raises(tasks.TaskInputError, match="no prediction"):
        tasks.merge_window_logits(windows[:2], logits[:2], 18)


def test_entity_spans_are_character_exact():
    example = tasks.TaggedExample("s", ("Mr", "Alice", "Smith", "went", "to", "New", "York"))
    tags = ["O", "B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    spans = tasks.entity_spans(example, tags)
    assert [(s["type"], s["text"], s["start"], s["end"]) for s in spans] == [
        ("PER", "Alice Smith", 3, 14), ("LOC", "New York", 23, 31)]
    assert all(example.text[s["start"]:s["end"]] == s["text"] for s in spans)
    iob1 = tasks.entity_spans(example, ["O", "I-PER", "I-PER", "O", "O", "I-LOC", "I-LOC"])
    assert iob1 == spans


CONTEXT = "The class object, named Zebra-81, is here. The class is set."


def _squad(answer="Zebra-81", start=None, impossible=False):
    start = CONTEXT.index(answer) if start is None else start
    answers = () if impossible else (tasks.SquadAnswer(answer, start),)
    return tasks.SquadExample("q1", "What is the name?", CONTEXT, answers, impossible)


def test_squad_features_single_window(uncased):
    [feature] = tasks.squad_features(_squad(), uncased, max_seq_length=40, doc_stride=8,
                                     max_query_length=64)
    ids = feature.features[F.INPUT_IDS]
    tokens = uncased.convert_ids_to_tokens(ids)
    query = uncased.tokenize("What is the name?")
    assert tokens[:len(query) + 2] == ["[CLS]"] + query + ["[SEP]"]
    s, e = feature.features[F.START_POSITIONS][0], feature.features[F.END_POSITIONS][0]
    offsets = tasks.tokenize_with_offsets(uncased, CONTEXT)
    first, last = feature.token_to_context[s], feature.token_to_context[e]
    assert CONTEXT[offsets.starts[first]:offsets.ends[last]] == "Zebra-81"
    assert tokens[s:e + 1] == ["z", "##e", "##b", "##r", "##a", "-", "81"]
    n = len(query) + 2
    assert feature.features[F.SEGMENT_IDS][:n] == [0] * n
    assert feature.features[F.SEGMENT_IDS][n:n + len(offsets) + 1] == [1] * (len(offsets) + 1)


def test_squad_windows_answer_inside_or_cls(uncased):
    example = _squad("set")
    feats = tasks.squad_features(example, uncased, max_seq_length=16, doc_stride=4,
                                 max_query_length=3)
    offsets = tasks.tokenize_with_offsets(uncased, CONTEXT)
    answer_token = offsets.starts.index(CONTEXT.index("set"))
    assert len(feats) > 3
    inside = 0
    for f in feats:
        ids = f.features[F.INPUT_IDS]
        assert len(ids) == 16 and ids[:5] == [uncased.cls_id] + uncased.convert_tokens_to_ids(
            uncased.tokenize("What is the")) + [uncased.sep_id]  # question cut to 3 tokens
        context_tokens = [t for t in f.token_to_context if t >= 0]
        s = f.features[F.START_POSITIONS][0]
        if answer_token in context_tokens:
            inside += 1
            assert f.token_to_context[s] == answer_token
        else:
            assert (s, f.features[F.END_POSITIONS][0]) == (0, 0)
    assert inside >= 1
    # Every context token is owned by exactly one window.
    owned = sorted(t for f in feats for t, o in zip(f.token_to_context, f.owned) if o)
    assert owned == list(range(len(offsets)))
    impossible = tasks.squad_features(_squad(impossible=True), uncased, 16, 4, 3)
    assert all(f.features[F.START_POSITIONS] == [0] for f in impossible)
    with pytest.raises(tasks.TaskInputError, match="q1: answer ' ' at character 3 covers no token"):
        tasks.squad_features(_squad(" ", start=3), uncased, 40, 8, 64)
    with pytest.raises(tasks.TaskInputError, match="leaves no room"):
        tasks.squad_features(_squad(), uncased, 6, 8, 64)


def _logits_for(feature, first, last, high=10.0):
    """Start/end logits that pick context tokens `first`..`last` in `feature`."""
    n = len(feature.token_to_context)
    noise = np.random.default_rng(feature.window)
    start, end = noise.normal(0, 0.1, n), noise.normal(0, 0.1, n)
    for p, t in enumerate(feature.token_to_context):
        if t == first:
            start[p] = high
        if t == last:
            end[p] = high
    return start, end


def test_squad_nbest_answer_text_and_null(uncased):
    example = _squad()
    feats = tasks.squad_features(example, uncased, 40, 8, 64)
    offsets = tasks.tokenize_with_offsets(uncased, CONTEXT)
    first = offsets.starts.index(CONTEXT.index("Zebra"))
    last = offsets.ends.index(CONTEXT.index("-81") + 3)
    start, end = _logits_for(feats[0], first, last)
    pred = tasks.squad_nbest(example, feats, [start], [end], n_best_size=5, max_answer_length=10,
                             offsets=offsets)
    assert pred.best_text == "Zebra-81" and CONTEXT[pred.best_start:pred.best_end] == "Zebra-81"
    assert pred.answer() == "Zebra-81" and pred.null_score_diff is None
    assert len(pred.nbest) == 5 and len({n["text"] for n in pred.nbest}) == 5
    assert sum(n["probability"] for n in pred.nbest) == pytest.approx(1.0)
    assert all(CONTEXT[n["start"]:n["end"]] == n["text"] for n in pred.nbest)
    # Too long for max_answer_length: the 7-token answer is not a candidate.
    short = tasks.squad_nbest(example, feats, [start], [end], n_best_size=5, max_answer_length=3,
                              offsets=offsets)
    assert short.best_text != "Zebra-81"
    # SQuAD 2.0: a strong [CLS] makes the null answer win; the diff is null - best.
    start2, end2 = start.copy(), end.copy()
    start2[0] = end2[0] = 12.0
    v2 = tasks.squad_nbest(example, feats, [start2], [end2], version_2=True, offsets=offsets)
    assert v2.null_score_diff == pytest.approx(24.0 - 20.0)
    assert v2.answer() == "" and v2.answer(null_threshold=5.0) == "Zebra-81"
    assert v2.nbest[0]["text"] == "" and v2.nbest[0]["start"] is None
    # No candidate at all (every logit on [CLS]): an empty answer, never a crash.
    none = tasks.squad_nbest(example, feats, [np.eye(40)[0] * 9], [np.eye(40)[0] * 9],
                             n_best_size=1, offsets=offsets)
    assert none.best_text == "" and none.nbest[0]["text"] == ""
    none2 = tasks.squad_nbest(example, feats, [np.eye(40)[0] * 9], [np.eye(40)[0] * 9],
                              n_best_size=1, version_2=True, offsets=offsets)
    assert none2.null_score_diff == float("inf") and none2.answer() == ""


def test_squad_nbest_uses_the_max_context_window(uncased):
    example = _squad("here")
    feats = tasks.squad_features(example, uncased, 16, 4, 3)
    offsets = tasks.tokenize_with_offsets(uncased, CONTEXT)
    target = offsets.starts.index(CONTEXT.index("here"))
    windows = [f for f in feats if target in f.token_to_context]
    assert len(windows) >= 2
    starts, ends = [], []
    for f in feats:
        s, e = _logits_for(f, target, target, high=5.0 + f.window)  # later windows score higher
        starts.append(s)
        ends.append(e)
    pred = tasks.squad_nbest(example, feats, starts, ends, version_2=True, offsets=offsets)
    assert pred.best_text == "here"
    owner = tasks.max_context_windows(tasks.window_spans(len(offsets), 16 - 3 - 3, 4),
                                      len(offsets))[target]
    # The score is the owner window's (start and end), not the highest window's.
    expected = (5.0 + owner) * 2
    best = next(n for n in pred.nbest if n["text"] == "here")
    assert best["start_logit"] + best["end_logit"] == pytest.approx(expected)
