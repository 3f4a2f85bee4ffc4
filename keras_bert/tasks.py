"""Fine-tuning tasks as pure logic: examples → model features → predictions.

Task families (`TASKS`, the one registry of task names: Finetune, TaskData, Evaluate,
export and the pipeline take these names; each `TaskKind` says which model head the
task trains and what its SavedModel export serves):

- `classification`, `pair`, `regression`: one text (or a pair) → `input_ids`,
  `input_mask`, `segment_ids` and `label_ids` (a class id, or a float for
  regression), truncated as the original `run_classifier.py` (`_truncate_seq_pair`).
- `ner`: words with one tag each → WordPiece tokens where the first piece of a
  word carries its tag id and every other position (`[CLS]`, `[SEP]`, later pieces,
  padding) carries `IGNORE_LABEL` (-100). A sentence longer than the model takes is
  cut into overlapping windows (`doc_stride` tokens apart); at prediction time each
  word takes the prediction of the window where it has the most context on both sides
  (`merge_window_logits`).
- `squad1`, `squad2`: question + context → windows `[CLS] question [SEP] context
  [SEP]` as the original `run_squad.py` (`max_query_length`, `doc_stride`,
  start/end positions 0 for `[CLS]` when the answer is outside the window or the
  question is unanswerable), and the original `write_predictions` post-processing
  into n-best answers (`squad_nbest`).

Character offsets: `tokenize_with_offsets` gives every WordPiece token its
`[start, end)` in the original string (accents, case, punctuation and removed
control characters accounted for), so an answer or entity predicted over tokens is
cut from the original text exactly: `context[start:end]`.

Example:
    >>> tok = BertTokenizer.from_vocab("vocab.txt")
    >>> feats = squad_features(example, tok, max_seq_length=384, doc_stride=128,
    ...                        max_query_length=64)
    >>> pred = squad_nbest(example, feats, start_logits, end_logits, version_2=True)
    >>> pred.best_text, pred.null_score_diff
"""

import dataclasses
import math
import unicodedata

import numpy as np

from keras_bert import features as F
from keras_bert import metrics as metrics_lib



@dataclasses.dataclass(frozen=True)
class TaskKind:
    """One task family of the registry `TASKS`.

    Attributes:
        name: the task name (`--task`).
        head: the model head on the encoder (`keras_bert.checkpoints.HEADS`):
            "classifier" (class logits, or one score for regression),
            "token_classifier" (a tag per token) or "span_qa" (start/end logits).
        serving: what the export's `serving_default` signature returns for raw text:
            "classes" (probabilities, label), "score", "entities" or "answer"
            (see `keras_bert.export`).
        pair: whether the export's signatures take `text_b`; None when the data
            decide (regression: one text or a pair).
        examples_signature: the export's `tf.Example` signature for TF Serving's
            Classify/Regress RPCs ("classify", "regress"), or None.
        allow_no_answer: question answering may answer "" (SQuAD 2.0).
    """

    name: str
    head: str
    serving: str
    pair: bool = False
    examples_signature: str = None
    allow_no_answer: bool = False


class _Registry(dict):
    """Task name → `TaskKind`; shown (and iterated, joined, used as choices) as its names."""

    def __repr__(self):
        return repr(tuple(self))


TASKS = _Registry((kind.name, kind) for kind in (
    TaskKind("classification", "classifier", "classes", False, "classify"),
    TaskKind("pair", "classifier", "classes", True, "classify"),
    TaskKind("regression", "classifier", "score", None, "regress"),
    TaskKind("ner", "token_classifier", "entities", False),
    TaskKind("squad1", "span_qa", "answer", True),
    TaskKind("squad2", "span_qa", "answer", True, allow_no_answer=True),
))
IGNORE_LABEL = -100


class TaskInputError(ValueError):
    """An example can't be turned into features (the message names the example)."""


# --------------------------------------------------------------------------------------
# Examples.


@dataclasses.dataclass(frozen=True)
class TextExample:
    """A single text or text pair with a class name (str) or a regression target (float).

    Attributes:
        guid: where the example comes from, e.g. "train.tsv:12".
        text: the first text.
        text_b: the second text of a pair. Defaults to None.
        label: class name or float; None when unlabelled. Defaults to None.
    """

    guid: str
    text: str
    text_b: str = None
    label: object = None


@dataclasses.dataclass(frozen=True)
class TaggedExample:
    """A sentence as words, each with a tag (NER).

    The original text of a pre-tokenised sentence (CoNLL) is its words joined by one
    space; `word_spans` are the words' `[start, end)` in that text.

    Attributes:
        guid: where the example comes from, e.g. "train.txt:120".
        words: the words.
        tags: one tag per word; None when unlabelled. Defaults to None.
    """

    guid: str
    words: tuple
    tags: tuple = None

    @property
    def text(self):
        return " ".join(self.words)

    @property
    def word_spans(self):
        spans, start = [], 0
        for word in self.words:
            spans.append((start, start + len(word)))
            start += len(word) + 1
        return spans


@dataclasses.dataclass(frozen=True)
class SquadAnswer:
    """A gold answer: its text and character offset in the context."""

    text: str
    start: int

    @property
    def end(self):
        return self.start + len(self.text)


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """A SQuAD question on a context.

    Attributes:
        qas_id: the question id.
        question: question text.
        context: the paragraph.
        answers: gold `SquadAnswer`s (the first one is trained on). Defaults to ().
        is_impossible: SQuAD 2.0 unanswerable question. Defaults to False.
    """

    qas_id: str
    question: str
    context: str
    answers: tuple = ()
    is_impossible: bool = False


# --------------------------------------------------------------------------------------
# Tokens with character offsets.


@dataclasses.dataclass(frozen=True)
class TokenOffsets:
    """WordPiece tokens of a text with their `[start, end)` character offsets."""

    tokens: list
    starts: list
    ends: list

    def __len__(self):
        return len(self.tokens)


def _split_words(text):
    """Words as `BertTokenizer.basic_tokenize` sees them before lower-casing.

    Removed characters are dropped, whitespace separates, CJK ideographs stand
    alone. Yields (word, [index in `text` of each character]).
    """
    from keras_bert.tokenizer import is_cjk_char, is_removed_char

    chars, index = [], []
    for i, ch in enumerate(text):
        if is_removed_char(ch):
            continue
        if ch.isspace() or is_cjk_char(ch):
            if chars:
                yield "".join(chars), index
                chars, index = [], []
            if not ch.isspace():
                yield ch, [i]
            continue
        chars.append(ch)
        index.append(i)
    if chars:
        yield "".join(chars), index


def _normalized(ch, lower):
    if not lower:
        return ch
    ch = ch.lower()
    if ch.isascii():
        return ch
    return "".join(c for c in unicodedata.normalize("NFD", ch)
                   if unicodedata.category(c) != "Mn")


def _piece_char_spans(word, index, pieces, lower):
    """Per piece, the `(start, end)` in the original text of each of its characters."""
    norm, source = [], []
    for ch, i in zip(word, index):
        for c in _normalized(ch, lower):
            norm.append(c)
            source.append(i)
    out = []
    if "".join(norm) == "".join(pieces):
        k = 0
        for piece in pieces:
            out.append([(source[k + j], source[k + j] + 1) for j in range(len(piece))])
            k += len(piece)
    else:
        # Lower-casing was context dependent (e.g. Greek final sigma): fall back to
        # the whole word for each of its pieces.
        whole = (index[0], index[-1] + 1)
        out = [[whole] * len(piece) for piece in pieces]
    return out


def tokenize_with_offsets(tokenizer, text):
    """WordPiece tokens of `text` and their character offsets in `text`.

    The tokens are exactly `tokenizer.tokenize(text)`; `text[start:end]` is the
    original spelling of a token (accents and case kept, `##` dropped). An `[UNK]`
    token spans its whole word piece.

    Args:
        tokenizer: a `keras_bert.tokenizer.BertTokenizer`.
        text: a str.

    Returns:
        A `TokenOffsets`.

    Example:
        >>> t = tokenize_with_offsets(tok, "Héllo, wörld")
        >>> t.tokens, t.starts, t.ends
        (['hello', ',', 'world'], [0, 5, 7], [5, 6, 12])
    """
    lower = tokenizer.do_lower_case
    tokens, starts, ends = [], [], []
    for word, index in _split_words(text):
        pieces = tokenizer.basic_tokenize(word)
        for piece, spans in zip(pieces, _piece_char_spans(word, index, pieces, lower)):
            subs = tokenizer.wordpiece(piece)
            if subs == [F.UNK_TOKEN]:
                tokens.append(F.UNK_TOKEN)
                starts.append(spans[0][0])
                ends.append(spans[-1][1])
                continue
            offset = 0
            for sub in subs:
                length = len(sub) - 2 if offset else len(sub)
                tokens.append(sub)
                starts.append(spans[offset][0])
                ends.append(spans[offset + length - 1][1])
                offset += length
    return TokenOffsets(tokens, starts, ends)


# --------------------------------------------------------------------------------------
# Classification, pairs, regression.


def text_features(example, tokenizer, max_seq_length, label_map=None):
    """Features of a `TextExample` as the original `convert_single_example`.

    Args:
        example: a `TextExample`.
        tokenizer: a `BertTokenizer`.
        max_seq_length: pad/truncate to this many tokens.
        label_map: {class name: id}; None for regression (the label is a float).
            Defaults to None.

    Returns:
        {input_ids, input_mask, segment_ids: lists of max_seq_length ints,
        label_ids: [id] or [float]} (no `label_ids` when the example is unlabelled).

    Raises:
        TaskInputError: the label is not in `label_map` or not a number.
    """
    out = dict(tokenizer.encode(example.text, example.text_b, max_seq_length=max_seq_length))
    if example.label is not None:
        if label_map is None:
            try:
                out[F.LABEL_IDS] = [float(example.label)]
            except (TypeError, ValueError):
                raise TaskInputError(f"{example.guid}: regression label {example.label!r} "
                                     "is not a number") from None
        else:
            if example.label not in label_map:
                raise TaskInputError(f"{example.guid}: label {example.label!r} is not one of "
                                     f"{sorted(label_map)}")
            out[F.LABEL_IDS] = [label_map[example.label]]
    return out


# --------------------------------------------------------------------------------------
# Windows over long token sequences.


def window_spans(num_tokens, max_tokens, stride):
    """(start, length) windows covering `num_tokens` tokens, as `run_squad.py`'s doc spans.

    Windows hold up to `max_tokens` tokens and start `stride` tokens apart (less when
    the window is shorter); the last one ends at the last token. No tokens → one
    empty window.
    """
    if max_tokens < 1 or stride < 1:
        raise TaskInputError(f"windows need max_tokens >= 1 and stride >= 1; got "
                             f"{max_tokens} and {stride}")
    spans, start = [], 0
    while True:
        length = min(num_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length >= num_tokens:
            return spans
        start += min(length, stride)


def max_context_windows(spans, num_tokens):
    """For each token, the window where it has the most context (`_check_is_max_context`).

    The score of token t in a window is min(tokens left of it, tokens right of it)
    + 0.01 * window length; the first best window wins.
    """
    best = [-1] * num_tokens
    best_score = [None] * num_tokens
    for w, (start, length) in enumerate(spans):
        end = start + length - 1
        for t in range(start, start + length):
            score = min(t - start, end - t) + 0.01 * length
            if best_score[t] is None or score > best_score[t]:
                best_score[t], best[t] = score, w
    return best


def _pad(values, length, value=0):
    return list(values) + [value] * (length - len(values))


# --------------------------------------------------------------------------------------
# Token classification (NER).


def iob1_to_bio(tags):
    """IOB1 tags → BIO: an `I-X` that starts an entity (after `O` or another type)
    becomes `B-X`; `B-X` (which in IOB1 separates two adjacent X) stays."""
    out, prev = [], "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return out


def tag_error(tag):
    """None if `tag` is "O" or "B-X"/"I-X" with a non-empty type, else what is wrong."""
    if tag == "O":
        return None
    if len(tag) > 2 and tag[:2] in ("B-", "I-"):
        return None
    return f"tag {tag!r} is not O, B-TYPE or I-TYPE"


@dataclasses.dataclass(frozen=True)
class TokenWindow:
    """One model input of a tagged sentence.

    Attributes:
        features: {input_ids, input_mask, segment_ids, [label_ids]} lists.
        word_ids: per position, the word whose first piece is there, else -1.
        owned: per position, whether this window is the word's max-context window.
    """

    features: dict
    word_ids: list
    owned: list


def tagged_features(example, tokenizer, max_seq_length, label_map=None, doc_stride=None):
    """`TaggedExample` → `TokenWindow`s with first-piece labels and -100 elsewhere.

    Args:
        example: a `TaggedExample`.
        tokenizer: a `BertTokenizer`.
        max_seq_length: tokens per window, `[CLS]` and `[SEP]` included.
        label_map: {tag: id}; needed when the example has tags. Defaults to None.
        doc_stride: tokens between window starts. Defaults to half a window.

    Returns:
        A list of `TokenWindow`s (one unless the sentence is too long).

    Raises:
        TaskInputError: a tag is not in `label_map`.
    """
    max_tokens = max_seq_length - 2
    stride = doc_stride or max(1, max_tokens // 2)
    pieces, word_of, labels = [], [], []
    for w, word in enumerate(example.words):
        subs = tokenizer.tokenize(word) or [F.UNK_TOKEN]
        for k, sub in enumerate(subs):
            pieces.append(sub)
            word_of.append(w if k == 0 else -1)
            if example.tags is not None and label_map is not None:
                if k == 0:
                    tag = example.tags[w]
                    if tag not in label_map:
                        raise TaskInputError(f"{example.guid}: word {w} ({word!r}) has tag "
                                             f"{tag!r}, not one of {sorted(label_map)}")
                    labels.append(label_map[tag])
                else:
                    labels.append(IGNORE_LABEL)
    ids = tokenizer.convert_tokens_to_ids(pieces)
    spans = window_spans(len(pieces), max_tokens, stride)
    owner = max_context_windows(spans, len(pieces))
    windows = []
    for w, (start, length) in enumerate(spans):
        stop = start + length
        input_ids = [tokenizer.cls_id] + ids[start:stop] + [tokenizer.sep_id]
        feats = {F.INPUT_IDS: _pad(input_ids, max_seq_length),
                 F.INPUT_MASK: _pad([1] * len(input_ids), max_seq_length),
                 F.SEGMENT_IDS: [0] * max_seq_length}
        if labels:
            feats[F.LABEL_IDS] = _pad([IGNORE_LABEL] + labels[start:stop] + [IGNORE_LABEL],
                                      max_seq_length, IGNORE_LABEL)
        word_ids = _pad([-1] + word_of[start:stop] + [-1], max_seq_length, -1)
        owned = _pad([False] + [owner[t] == w for t in range(start, stop)] + [False],
                     max_seq_length, False)
        windows.append(TokenWindow(feats, word_ids, owned))
    return windows


def merge_window_logits(windows, window_logits, num_words):
    """Per-word logits of a sentence from its windows' per-position logits.

    Each word takes the logits at its first piece in the window where that piece
    has the most context (`TokenWindow.owned`).

    Args:
        windows: the sentence's `TokenWindow`s.
        window_logits: one (seq_len, num_classes) array per window.
        num_words: words in the sentence.

    Returns:
        A (num_words, num_classes) array.
    """
    num_classes = np.asarray(window_logits[0]).shape[-1]
    out = np.full((num_words, num_classes), np.nan, dtype=np.float32)
    for window, logits in zip(windows, window_logits):
        logits = np.asarray(logits)
        for position, (word, owned) in enumerate(zip(window.word_ids, window.owned)):
            if word >= 0 and owned:
                out[word] = logits[position]
    if np.isnan(out).any():
        missing = int(np.isnan(out).any(axis=1).argmax())
        raise TaskInputError(f"word {missing} has no prediction in any window")
    return out


def entity_spans(example, tags):
    """Entities of a tag sequence with character offsets in `example.text`.

    Args:
        example: the `TaggedExample` the tags are for.
        tags: one tag per word (BIO or IOB1).

    Returns:
        [{"type", "start", "end", "text", "first_word", "last_word"}]; `end` is
        exclusive and `example.text[start:end] == text`.
    """
    spans = example.word_spans
    text = example.text
    out = []
    for type_, first, last in metrics_lib.get_entities(list(tags)):
        start, end = spans[first][0], spans[last][1]
        out.append({"type": type_, "start": start, "end": end, "text": text[start:end],
                    "first_word": first, "last_word": last})
    return out


# --------------------------------------------------------------------------------------
# SQuAD.


@dataclasses.dataclass(frozen=True)
class SquadFeature:
    """One window of a SQuAD example.

    Attributes:
        qas_id: the question id.
        window: index of this window in the example.
        features: {input_ids, input_mask, segment_ids, start_positions,
            end_positions} (positions are [0] when the answer is not inside).
        token_to_context: per position, the index of its context token, else -1.
        owned: per position, whether this window is the token's max-context window.
    """

    qas_id: str
    window: int
    features: dict
    token_to_context: list
    owned: list


def answer_token_span(offsets, start, end):
    """First and last token overlapping characters `[start, end)`, or None."""
    hits = [i for i, (s, e) in enumerate(zip(offsets.starts, offsets.ends)) if s < end and e > start]
    return (hits[0], hits[-1]) if hits else None


def squad_features(example, tokenizer, max_seq_length=384, doc_stride=128, max_query_length=64,
                   offsets=None):
    """`SquadExample` → `SquadFeature` windows (`run_squad.py`'s conversion).

    The question keeps its first `max_query_length` tokens; the context is cut into
    windows of `max_seq_length - len(question) - 3` tokens starting `doc_stride`
    tokens apart. The training target is the first answer's tokens when they lie
    wholly inside the window, else `[CLS]` (0, 0); unanswerable questions always
    point at `[CLS]`.

    Args:
        example: a `SquadExample`.
        tokenizer: a `BertTokenizer`.
        max_seq_length: tokens per window. Defaults to 384.
        doc_stride: context tokens between window starts. Defaults to 128.
        max_query_length: question tokens kept. Defaults to 64.
        offsets: the context's `tokenize_with_offsets`, if already computed.

    Returns:
        A list of `SquadFeature`s.

    Raises:
        TaskInputError: no room for the context, or the answer covers no token.
    """
    query = tokenizer.tokenize(example.question)[:max_query_length]
    offsets = offsets or tokenize_with_offsets(tokenizer, example.context)
    max_tokens = max_seq_length - len(query) - 3
    if max_tokens < 1:
        raise TaskInputError(f"{example.qas_id}: max_seq_length={max_seq_length} leaves no room "
                             f"for context after {len(query)} question tokens")
    answer = None
    if example.answers and not example.is_impossible:
        first = example.answers[0]
        answer = answer_token_span(offsets, first.start, first.end)
        if answer is None:
            raise TaskInputError(f"{example.qas_id}: answer {first.text!r} at character "
                                 f"{first.start} covers no token of the context")
    context_ids = tokenizer.convert_tokens_to_ids(offsets.tokens)
    query_ids = tokenizer.convert_tokens_to_ids(query)
    spans = window_spans(len(context_ids), max_tokens, doc_stride)
    owner = max_context_windows(spans, len(context_ids))
    head = [tokenizer.cls_id] + query_ids + [tokenizer.sep_id]
    out = []
    for w, (start, length) in enumerate(spans):
        input_ids = head + context_ids[start:start + length] + [tokenizer.sep_id]
        segment_ids = [0] * len(head) + [1] * (length + 1)
        token_to_context = [-1] * len(head) + list(range(start, start + length)) + [-1]
        owned = [False] * len(head) + [owner[t] == w for t in range(start, start + length)] + [False]
        start_position = end_position = 0
        if answer is not None and start <= answer[0] and answer[1] < start + length:
            start_position = answer[0] - start + len(head)
            end_position = answer[1] - start + len(head)
        feats = {F.INPUT_IDS: _pad(input_ids, max_seq_length),
                 F.INPUT_MASK: _pad([1] * len(input_ids), max_seq_length),
                 F.SEGMENT_IDS: _pad(segment_ids, max_seq_length),
                 F.START_POSITIONS: [start_position], F.END_POSITIONS: [end_position]}
        out.append(SquadFeature(example.qas_id, w, feats, _pad(token_to_context, max_seq_length, -1),
                                _pad(owned, max_seq_length, False)))
    return out


@dataclasses.dataclass(frozen=True)
class SquadPrediction:
    """Post-processed answers of one question.

    Attributes:
        qas_id: the question id.
        nbest: up to n_best_size dicts {"text", "start", "end", "probability",
            "start_logit", "end_logit"}, best first; `context[start:end] == text`
            ("" with start/end None is the null answer).
        best_text: the best non-null answer ("" if there is none).
        best_start: its start character (None if none).
        best_end: its end character, exclusive (None if none).
        null_score_diff: SQuAD 2.0: null score minus best non-null score
            (`null_odds`; +inf without a non-null candidate); None for SQuAD 1.1.
    """

    qas_id: str
    nbest: list
    best_text: str
    best_start: int
    best_end: int
    null_score_diff: float = None

    def answer(self, null_threshold=0.0):
        """The final answer: "" if `null_score_diff > null_threshold` (SQuAD 2.0)."""
        if self.null_score_diff is not None and self.null_score_diff > null_threshold:
            return ""
        return self.best_text


def _best_indexes(logits, n):
    # Stable: equal scores keep position order, as the original's sorted().
    return [i for i, _ in sorted(enumerate(logits), key=lambda x: x[1], reverse=True)[:n]]


def softmax(logits, axis=-1):
    """Softmax in float64 over `axis` (numpy; the max is subtracted first).

    Args:
        logits: array-like of scores.
        axis: the axis that sums to 1. Defaults to -1.

    Returns:
        A float64 `np.ndarray` of the shape of `logits`.
    """
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def squad_nbest(example, features, start_logits, end_logits, n_best_size=20,
                max_answer_length=30, version_2=False, offsets=None, tokenizer=None):
    """N-best answers of one question from its windows' logits (`write_predictions`).

    Candidates are pairs of the top `n_best_size` start and end positions of each
    window that both fall on context tokens, start in the window where the start
    token has the most context, end no earlier than they start and span at most
    `max_answer_length` tokens; score = start logit + end logit. With `version_2`
    the null answer (`[CLS]`, lowest over windows) competes too. Answers with the
    same text are kept once; probabilities are a softmax over the n-best scores.
    The text is cut from the context by character offsets, so it is exactly the
    original spelling.

    Args:
        example: the `SquadExample`.
        features: its `SquadFeature`s, in window order.
        start_logits: one (seq_len,) array per feature.
        end_logits: one (seq_len,) array per feature.
        n_best_size: candidates kept. Defaults to 20.
        max_answer_length: longest answer in tokens. Defaults to 30.
        version_2: SQuAD 2.0 (null answers). Defaults to False.
        offsets: the context's `tokenize_with_offsets`; computed with `tokenizer`
            when not given. Defaults to None.
        tokenizer: the `BertTokenizer`, needed only without `offsets`.

    Returns:
        A `SquadPrediction`.
    """
    if offsets is None:
        offsets = tokenize_with_offsets(tokenizer, example.context)
    prelim = []
    null = None  # (score, start_logit, end_logit)
    for feature, starts, ends in zip(features, start_logits, end_logits):
        starts, ends = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
        num_tokens = int(sum(feature.features[F.INPUT_MASK]))
        if version_2:
            score = starts[0] + ends[0]
            if null is None or score < null[0]:
                null = (score, float(starts[0]), float(ends[0]))
        for s in _best_indexes(starts[:num_tokens].tolist(), n_best_size):
            for e in _best_indexes(ends[:num_tokens].tolist(), n_best_size):
                if feature.token_to_context[s] < 0 or feature.token_to_context[e] < 0:
                    continue
                if not feature.owned[s] or e < s or e - s + 1 > max_answer_length:
                    continue
                prelim.append((float(starts[s] + ends[e]), float(starts[s]), float(ends[e]),
                               feature.token_to_context[s], feature.token_to_context[e]))
    if null is not None:
        prelim.append((null[0], null[1], null[2], None, None))
    prelim.sort(key=lambda p: p[0], reverse=True)
    nbest, seen = [], set()
    for score, start_logit, end_logit, first, last in prelim:
        if len(nbest) >= n_best_size:
            break
        if first is None:
            text, start, end = "", None, None
        else:
            start, end = offsets.starts[first], offsets.ends[last]
            text = example.context[start:end]
        if text in seen:
            continue
        seen.add(text)
        nbest.append({"text": text, "start": start, "end": end, "score": score,
                      "start_logit": start_logit, "end_logit": end_logit})
    if version_2 and "" not in seen and null is not None:
        nbest.append({"text": "", "start": None, "end": None, "score": null[0],
                      "start_logit": null[1], "end_logit": null[2]})
    if not nbest:
        nbest.append({"text": "", "start": None, "end": None, "score": 0.0,
                      "start_logit": 0.0, "end_logit": 0.0})
    for entry, probability in zip(nbest, softmax([n["score"] for n in nbest])):
        entry["probability"] = float(probability)
        del entry["score"]
    best = next((n for n in nbest if n["text"]), None)
    null_diff = None
    if version_2:
        null_score = null[0] if null is not None else 0.0
        null_diff = (null_score - best["start_logit"] - best["end_logit"]) if best else math.inf
    return SquadPrediction(
        qas_id=example.qas_id, nbest=nbest, best_text=best["text"] if best else "",
        best_start=best["start"] if best else None, best_end=best["end"] if best else None,
        null_score_diff=null_diff)
