"""BERT WordPiece tokenization, in plain Python and inside the TensorFlow graph.

Both tokenizers reproduce google-research/bert's `tokenization.py`
(`FullTokenizer` = `BasicTokenizer` + `WordpieceTokenizer`):

1. Invalid characters (U+0000, U+FFFD) and control characters (categories Cc and
   Cf, except tab, newline and carriage return) are removed.
2. Whitespace (space, tab, newline, carriage return, category Zs) separates words,
   and so does anything else Python's `str.split()` splits on (U+2028, U+2029).
3. CJK ideographs (the original's code-point ranges) become words of their own.
4. With `do_lower_case`: each word is lowercased with Python's `str.lower()`,
   decomposed with NFD, and nonspacing marks (category Mn) are dropped.
5. Punctuation (ASCII 33-47, 58-64, 91-96, 123-126 and Unicode categories P*)
   becomes words of its own.
6. Each word is split into WordPiece pieces by greedy longest-match-first with
   `##` marking continuations; a word longer than 200 characters, or one that
   cannot be fully pieced, becomes `[UNK]`.

`BertTokenizer` is the pure-Python tokenizer (data preparation, Beam).
`InGraphBertTokenizer` is a `tf.Module` for `tf.function`, `tf.data` and SavedModel
export; it reads the same vocabulary file, which becomes a SavedModel asset.

The character classes of steps 1, 2, 5 and the Mn of step 4 are computed once per
process from Python's `unicodedata`, and the in-graph tokenizer embeds them in its
regular expressions; so both tokenizers agree on every character Python knows.
Lowercasing and NFD run in the graph on TensorFlow's ICU: ICU and Python may know
different Unicode versions, which matters only for characters assigned after the
older of the two (tested exhaustively in `tests/keras_bert/test_tokenizer.py`).

Example:
    >>> tok = BertTokenizer.from_vocab("vocab.txt", do_lower_case=True)
    >>> tok.tokenize("Héllo, World!")
    ['hello', ',', 'world', '!']
    >>> tok.encode("Hello", "World", max_seq_length=8)["input_ids"]
    [101, 7592, 102, 2088, 102, 0, 0, 0]
"""

import functools
import re
import unicodedata

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from keras_bert import features

MAX_INPUT_CHARS_PER_WORD = 200
CONTINUATION_PREFIX = "##"

# google-research/bert `BasicTokenizer._is_chinese_char`, inclusive ranges.
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


class TokenizerInputError(ValueError):
    """A text given to a tokenizer is not valid input (e.g. bytes that are not UTF-8)."""


class VocabularyError(ValueError):
    """A vocabulary file is unreadable or lacks what a BERT vocabulary needs."""


# ---------------------------------------------------------------------------
# Character classes (from Python's unicodedata, shared by both tokenizers).
# ---------------------------------------------------------------------------


def is_removed_char(char):
    """Whether the original's `_clean_text` deletes `char` (invalid or control).

    Args:
        char: one character.
    """
    if char in "\t\n\r":
        return False
    cp = ord(char)
    return cp == 0 or cp == 0xFFFD or unicodedata.category(char) in ("Cc", "Cf")


def is_punctuation_char(char):
    """Whether `char` is punctuation to the original (`_is_punctuation`).

    Args:
        char: one character.
    """
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk_char(char):
    """Whether `char` is in the original's CJK ideograph ranges.

    Args:
        char: one character.
    """
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def _code_point_ranges(predicate):
    """Inclusive (first, last) code-point ranges of the characters `predicate` accepts."""
    ranges = []
    start = None
    for cp in range(0x110000):
        inside = not (0xD800 <= cp <= 0xDFFF) and predicate(chr(cp))
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            ranges.append((start, cp - 1))
            start = None
    if start is not None:
        ranges.append((start, 0x10FFFF))
    return tuple(ranges)


@functools.lru_cache(maxsize=None)
def char_class_ranges():
    """The tokenizer's character classes as code-point ranges, computed once.

    Returns:
        A dict with keys "removed", "whitespace", "cjk", "punctuation" and
        "nonspacing_mark", each a tuple of inclusive (first, last) ranges.
        "whitespace" is what `str.split()` splits on (`str.isspace`).
    """
    return {
        "removed": _code_point_ranges(is_removed_char),
        "whitespace": _code_point_ranges(str.isspace),
        "kept_whitespace": _code_point_ranges(lambda c: c.isspace() and not is_removed_char(c)),
        "cjk": CJK_RANGES,
        "punctuation": _code_point_ranges(is_punctuation_char),
        "nonspacing_mark": _code_point_ranges(lambda c: unicodedata.category(c) == "Mn"),
    }


def _python_class(ranges):
    parts = []
    for lo, hi in ranges:
        parts.append("\\U%08x" % lo if lo == hi else "\\U%08x-\\U%08x" % (lo, hi))
    return "[" + "".join(parts) + "]"


def _re2_class(ranges):
    parts = []
    for lo, hi in ranges:
        parts.append("\\x{%x}" % lo if lo == hi else "\\x{%x}-\\x{%x}" % (lo, hi))
    return "[" + "".join(parts) + "]"


@functools.lru_cache(maxsize=None)
def _python_patterns():
    classes = char_class_ranges()
    return {
        "removed": re.compile(_python_class(classes["removed"])),
        "cjk": re.compile(_python_class(classes["cjk"])),
        "punctuation_split": re.compile("(" + _python_class(classes["punctuation"]) + ")"),
        "nonspacing_mark": re.compile(_python_class(classes["nonspacing_mark"])),
    }


@functools.lru_cache(maxsize=None)
def re2_patterns():
    """RE2 patterns of the in-graph tokenizer (one per character class).

    Returns:
        A dict with keys "removed", "whitespace", "cjk", "punctuation",
        "nonspacing_mark", each a bracketed RE2 character class.
    """
    return {name: _re2_class(ranges) for name, ranges in char_class_ranges().items()}


# ---------------------------------------------------------------------------
# Vocabulary file.
# ---------------------------------------------------------------------------


def load_vocab(vocab_path):
    """Reads a BERT `vocab.txt`: one token per line, the line number is the id.

    Lines are split on "\\n" only and stripped of surrounding whitespace, as the
    original `load_vocab` does. Unlike the original, a token listed twice is an
    error (the original silently keeps the last id).

    Args:
        vocab_path: path of the vocabulary file (any `tf.io.gfile` path).

    Returns:
        A list of tokens, index = id.

    Raises:
        VocabularyError: the file is not UTF-8, lists a token twice or lacks one of
            `features.SPECIAL_TOKENS`.
    """
    with tf.io.gfile.GFile(vocab_path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise VocabularyError(
            f"{vocab_path}: line {line} is not valid UTF-8 ({e.reason})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    tokens = [line.strip() for line in lines]
    seen = {}
    for i, token in enumerate(tokens):
        if token in seen:
            raise VocabularyError(
                f"{vocab_path}: token {token!r} on line {i + 1} already appears on line "
                f"{seen[token] + 1}; a BERT vocabulary lists each token once")
        seen[token] = i
    missing = [t for t in features.SPECIAL_TOKENS if t not in seen]
    if missing:
        raise VocabularyError(f"{vocab_path}: special tokens {missing} are missing; "
                              f"a BERT vocabulary needs all of {list(features.SPECIAL_TOKENS)}")
    return tokens


# ---------------------------------------------------------------------------
# Shared helpers.
# ---------------------------------------------------------------------------


def truncated_pair_lengths(len_a, len_b, max_tokens):
    """Lengths the original `_truncate_seq_pair` leaves, in closed form.

    The original pops one token at a time from the longer sequence (from `b` on
    a tie) until `len_a + len_b <= max_tokens`. That leaves: both unchanged if
    they fit; otherwise `b` cut to `min(len_b, max(max_tokens - len_a,
    max_tokens // 2))` and `a` to the rest.

    Args:
        len_a: tokens in the first sequence.
        len_b: tokens in the second sequence.
        max_tokens: room for both (sequence length less the special tokens).

    Returns:
        (new_len_a, new_len_b).
    """
    if len_a + len_b <= max_tokens:
        return len_a, len_b
    new_b = min(len_b, max(max_tokens - len_a, max_tokens // 2))
    return min(len_a, max_tokens - new_b), new_b


def _check_max_seq_length(max_seq_length, pair):
    needed = 3 if pair else 2
    if not isinstance(max_seq_length, (int, np.integer)) or isinstance(max_seq_length, bool):
        raise TypeError(f"max_seq_length must be an int, got {type(max_seq_length).__name__}")
    if max_seq_length < needed:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for the special tokens "
                         f"of a {'pair' if pair else 'single text'}; it must be >= {needed}")


def _as_text(value, what):
    """Returns `value` as str; bytes are decoded as strict UTF-8."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise TokenizerInputError(
                f"{what} is not valid UTF-8: {e.reason} at byte offset {e.start}") from None
    if value is None:
        raise TypeError(f"{what} is None; expected str or UTF-8 bytes")
    raise TypeError(f"{what} is a {type(value).__name__}; expected str or UTF-8 bytes")


# ---------------------------------------------------------------------------
# Pure-Python tokenizer.
# ---------------------------------------------------------------------------


def basic_tokenize(text, do_lower_case=True):
    """Splits `text` into words as the original `BasicTokenizer` does (no vocabulary).

    Args:
        text: str, or bytes holding UTF-8.
        do_lower_case: lowercase and strip accents. Defaults to True.

    Returns:
        The list of words: runs of non-space, non-punctuation characters, single
        punctuation characters and single CJK ideographs.

    Example:
        >>> basic_tokenize("Héllo, 世界!")
        ['hello', ',', '世', '界', '!']
    """
    text = _as_text(text, "text")
    p = _python_patterns()
    text = p["removed"].sub("", text)
    text = p["cjk"].sub(r" \g<0> ", text)
    pieces = []
    for word in text.split():
        if do_lower_case:
            word = word.lower()
            if not word.isascii():
                word = p["nonspacing_mark"].sub("", unicodedata.normalize("NFD", word))
        pieces.extend(piece for piece in p["punctuation_split"].split(word) if piece)
    # Lowercasing and NFD never make whitespace, but the original re-splits anyway.
    return " ".join(pieces).split()


class _VocabularyInfo:
    """Casing, vocabulary path/size and special-token ids, shared by both tokenizers.

    Subclasses set `_vocab_path`, `_do_lower_case`, `_vocab_size` and `_special_ids`
    (special token -> id).
    """

    @property
    def vocab_path(self):
        return self._vocab_path

    @property
    def do_lower_case(self):
        return self._do_lower_case

    @property
    def vocab_size(self):
        return self._vocab_size

    @property
    def pad_id(self):
        return self._special_ids[features.PAD_TOKEN]

    @property
    def unk_id(self):
        return self._special_ids[features.UNK_TOKEN]

    @property
    def cls_id(self):
        return self._special_ids[features.CLS_TOKEN]

    @property
    def sep_id(self):
        return self._special_ids[features.SEP_TOKEN]

    @property
    def mask_id(self):
        return self._special_ids[features.MASK_TOKEN]


class BertTokenizer(_VocabularyInfo):
    """BERT's WordPiece tokenizer in pure Python, as google-research/bert's `FullTokenizer`.

    Text is `str`, or `bytes` decoded as UTF-8; bytes that are not valid UTF-8 raise
    `TokenizerInputError` naming the byte offset (the original silently dropped
    them), and `None` raises `TypeError`.

    Args:
        vocab: the tokens, index = id (as `load_vocab` returns them).
        do_lower_case: lowercase and strip accents (uncased models). Defaults to True.
        vocab_path: where `vocab` was read from, for reference. Defaults to None.

    Example:
        >>> tok = BertTokenizer.from_vocab("vocab.txt")
        >>> tok.tokenize("unaffable")
        ['un', '##aff', '##able']
    """

    def __init__(self, vocab, do_lower_case=True, vocab_path=None):
        self._tokens = list(vocab)
        self._vocab = {token: i for i, token in enumerate(self._tokens)}
        if len(self._vocab) != len(self._tokens):
            raise VocabularyError("vocab lists a token twice")
        missing = [t for t in features.SPECIAL_TOKENS if t not in self._vocab]
        if missing:
            raise VocabularyError(f"vocab lacks the special tokens {missing}")
        self._do_lower_case = bool(do_lower_case)
        self._vocab_path = vocab_path
        self._vocab_size = len(self._tokens)
        self._special_ids = {t: self._vocab[t] for t in features.SPECIAL_TOKENS}
        # No vocabulary entry is longer than this, so longer candidates are skipped.
        self._max_piece_chars = max(len(t) for t in self._tokens)
        _python_patterns()  # Builds the character classes now rather than on first use.

    @classmethod
    def from_vocab(cls, vocab_path, do_lower_case=True):
        """Reads a `vocab.txt` (see `load_vocab`).

        Args:
            vocab_path: path of the vocabulary file.
            do_lower_case: lowercase and strip accents (uncased models). Defaults to True.
        """
        return cls(load_vocab(vocab_path), do_lower_case=do_lower_case, vocab_path=vocab_path)

    @property
    def vocab(self):
        """Token -> id (the tokenizer's own dict: do not modify it)."""
        return self._vocab

    def basic_tokenize(self, text):
        """Splits `text` into words as the original `BasicTokenizer` does.

        Args:
            text: str, or bytes holding UTF-8.

        Returns:
            The words (lowercased and accent-stripped when `do_lower_case`).
        """
        return basic_tokenize(text, self._do_lower_case)

    def wordpiece(self, word):
        """Splits one word into WordPiece tokens (greedy longest match first).

        Args:
            word: a word from `basic_tokenize`.

        Returns:
            The pieces, continuations prefixed with "##"; `["[UNK]"]` if the word
            is longer than 200 characters or cannot be fully pieced.
        """
        n = len(word)
        if n > MAX_INPUT_CHARS_PER_WORD:
            return [features.UNK_TOKEN]
        vocab = self._vocab
        pieces = []
        start = 0
        while start < n:
            end = min(n, start + self._max_piece_chars)
            while end > start:
                piece = word[start:end] if start == 0 else CONTINUATION_PREFIX + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            else:
                return [features.UNK_TOKEN]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize_words(self, text):
        """WordPiece tokens grouped by word (for whole-word masking).

        Args:
            text: str, or bytes holding UTF-8.

        Returns:
            A list with, per word, the list of its pieces.
        """
        return [self.wordpiece(word) for word in self.basic_tokenize(text)]

    def tokenize(self, text):
        """WordPiece tokens of `text`.

        Args:
            text: str, or bytes holding UTF-8.

        Returns:
            A list of token strings.
        """
        return [piece for word in self.basic_tokenize(text) for piece in self.wordpiece(word)]

    def convert_tokens_to_ids(self, tokens):
        """Ids of `tokens`; tokens not in the vocabulary get the `[UNK]` id.

        Args:
            tokens: iterable of token strings.
        """
        vocab = self._vocab
        unk = self.unk_id
        return [vocab.get(token, unk) for token in tokens]

    def token_ids_batch(self, texts):
        """Ids of each text (no special tokens), as `convert_tokens_to_ids(tokenize(text))`."""
        return [self.convert_tokens_to_ids(self.tokenize(text)) for text in texts]

    def convert_ids_to_tokens(self, ids):
        """Tokens of `ids`.

        Args:
            ids: iterable of ints in [0, vocab_size).

        Raises:
            ValueError: an id is outside the vocabulary.
        """
        out = []
        size = len(self._tokens)
        for i, token_id in enumerate(ids):
            if not 0 <= token_id < size:
                raise ValueError(f"ids[{i}] = {token_id} is outside the vocabulary [0, {size})")
            out.append(self._tokens[int(token_id)])
        return out

    def _ids(self, text, what):
        return self.convert_tokens_to_ids(
            piece for word in self.basic_tokenize(_as_text(text, what))
            for piece in self.wordpiece(word))

    def _assemble(self, ids_a, ids_b, max_seq_length):
        pair = ids_b is not None
        if max_seq_length is not None:
            if pair:
                la, lb = truncated_pair_lengths(len(ids_a), len(ids_b), max_seq_length - 3)
                ids_a, ids_b = ids_a[:la], ids_b[:lb]
            else:
                ids_a = ids_a[: max_seq_length - 2]
        input_ids = [self.cls_id] + ids_a + [self.sep_id]
        segment_ids = [0] * len(input_ids)
        if pair:
            input_ids += ids_b + [self.sep_id]
            segment_ids += [1] * (len(ids_b) + 1)
        input_mask = [1] * len(input_ids)
        if max_seq_length is not None:
            pad = max_seq_length - len(input_ids)
            input_ids += [self.pad_id] * pad
            segment_ids += [0] * pad
            input_mask += [0] * pad
        return {
            features.INPUT_IDS: input_ids,
            features.SEGMENT_IDS: segment_ids,
            features.INPUT_MASK: input_mask,
        }

    def encode(self, text, text_b=None, max_seq_length=None):
        """Model inputs for one text or text pair: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`.

        With `max_seq_length`, a pair is truncated longest-first exactly as the
        original `_truncate_seq_pair` (one token at a time from the longer, from `b`
        on a tie), a single text is cut to `max_seq_length - 2` tokens, and all three
        lists are padded to `max_seq_length` (id `[PAD]` = 0, segment 0, mask 0).

        Args:
            text: str, or bytes holding UTF-8.
            text_b: the second text of a pair. Defaults to None.
            max_seq_length: truncate and pad to this length. Defaults to None
                (neither).

        Returns:
            A dict of int lists: "input_ids", "segment_ids", "input_mask".
        """
        if max_seq_length is not None:
            _check_max_seq_length(max_seq_length, text_b is not None)
        ids_a = self._ids(text, "text")
        ids_b = None if text_b is None else self._ids(text_b, "text_b")
        return self._assemble(ids_a, ids_b, max_seq_length)

    def encode_batch(self, texts, texts_b=None, max_seq_length=None, dtype=np.int32):
        """`encode` for many texts (or pairs) at once.

        Args:
            texts: sequence of str or UTF-8 bytes.
            texts_b: sequence of second texts, same length as `texts`; an entry may
                be None for a single text. Defaults to None.
            max_seq_length: truncate and pad to this length. Defaults to None.
            dtype: numpy dtype of the arrays returned with `max_seq_length`.
                Defaults to np.int32.

        Returns:
            A dict "input_ids", "segment_ids", "input_mask" of lists of int lists,
            or, with `max_seq_length`, of `[len(texts), max_seq_length]` arrays.

        Raises:
            TypeError: an entry is None (or not text); the message names its index.
            TokenizerInputError: bytes at some index are not UTF-8 (index and byte
                offset in the message).
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a sequence of texts, not a single text")
        texts = list(texts)
        if texts_b is not None:
            texts_b = list(texts_b)
            if len(texts_b) != len(texts):
                raise ValueError(f"texts_b has {len(texts_b)} entries but texts has {len(texts)}")
        rows = []
        for i, text in enumerate(texts):
            text_b = None if texts_b is None else texts_b[i]
            if max_seq_length is not None:
                _check_max_seq_length(max_seq_length, text_b is not None)
            ids_a = self._ids(text, f"texts[{i}]")
            ids_b = None if text_b is None else self._ids(text_b, f"texts_b[{i}]")
            rows.append(self._assemble(ids_a, ids_b, max_seq_length))
        names = (features.INPUT_IDS, features.SEGMENT_IDS, features.INPUT_MASK)
        if max_seq_length is None:
            return {name: [row[name] for row in rows] for name in names}
        return {
            name: np.array([row[name] for row in rows], dtype=dtype).reshape(-1, max_seq_length)
            for name in names
        }


# ---------------------------------------------------------------------------
# In-graph tokenizer.
# ---------------------------------------------------------------------------


class InGraphBertTokenizer(_VocabularyInfo, tf.Module):
    """BERT's WordPiece tokenizer as TensorFlow ops, identical to `BertTokenizer`.

    Usable eagerly, inside `tf.function`, `tf.data` and exported SavedModels: the
    vocabulary lookup table is tracked, so `vocab.txt` becomes a SavedModel asset.
    Inputs are string tensors of shape `[batch]` (any batch size, including 0).
    Invalid UTF-8 raises `tf.errors.InvalidArgumentError` ("invalid UTF-8").

    Built from core string ops (`regex_replace`, `lower`, `length`,
    `unicode_transcode`) and tensorflow-text ops that exist since 2.x
    (`normalize_utf8`, `regex_split`, `WordpieceTokenizer` over a hash table).
    tensorflow-text's `BertTokenizer` is avoided on purpose: its NFKC case folding
    differs from Python's `lower()` ("ß", full-width letters, ligatures) and its
    word limit counts bytes, not characters.

    Args:
        vocab_path: path of `vocab.txt`; its lines must be the tokens exactly (no
            surrounding whitespace), since the graph reads the file as it is.
        do_lower_case: lowercase and strip accents (uncased models). Defaults to True.
        name: module name. Defaults to None.

    Example:
        >>> tok = InGraphBertTokenizer("vocab.txt")
        >>> tok.encode(tf.constant(["Hello"]), max_seq_length=8)["input_ids"]
        <tf.Tensor: shape=(1, 8), dtype=int32, numpy=array([[101, 7592, 102, 0, 0, 0, 0, 0]])>
    """

    def __init__(self, vocab_path, do_lower_case=True, name=None):
        super().__init__(name=name)
        tokens = load_vocab(vocab_path)
        with tf.io.gfile.GFile(vocab_path, "rb") as f:
            raw_lines = f.read().decode("utf-8").split("\n")
        for i, (line, token) in enumerate(zip(raw_lines, tokens)):
            if line.rstrip("\r") != token:
                raise VocabularyError(
                    f"{vocab_path}: line {i + 1} ({line!r}) has whitespace around its token; "
                    "the in-graph tokenizer needs the file to hold the tokens exactly")
        ids = {token: i for i, token in enumerate(tokens)}
        self._vocab_path = vocab_path
        self._do_lower_case = bool(do_lower_case)
        self._vocab_size = len(tokens)
        self._special_ids = {t: ids[t] for t in features.SPECIAL_TOKENS}
        # The WordPiece kernel treats -1 as "not in the vocabulary".
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                vocab_path,
                key_dtype=tf.string,
                key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
                value_dtype=tf.int64,
                value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            default_value=-1,
        )
        # Words over 200 characters never reach the kernel (they are replaced by
        # "[UNK]" first), so its byte limit only has to admit 200 4-byte characters.
        self._wordpiece = tf_text.WordpieceTokenizer(
            self._table,
            suffix_indicator=CONTINUATION_PREFIX,
            max_bytes_per_word=4 * MAX_INPUT_CHARS_PER_WORD,
            token_out_type=tf.int64,
            unknown_token=features.UNK_TOKEN,
        )
        patterns = re2_patterns()
        self._removed_pattern = patterns["removed"]
        self._cjk_pattern = patterns["cjk"]
        self._mark_pattern = patterns["nonspacing_mark"]
        self._split_pattern = "%s+|%s" % (patterns["whitespace"], patterns["punctuation"])
        self._keep_pattern = patterns["punctuation"]
        # For offsets into the raw text: split where the normalized text would be
        # split. Whitespace that the original deletes as a control character (e.g.
        # U+001C) must not split here, and CJK characters are words of their own.
        self._raw_split_pattern = "%s+|%s|%s" % (
            patterns["kept_whitespace"], patterns["punctuation"], patterns["cjk"])
        self._raw_keep_pattern = "%s|%s" % (patterns["punctuation"], patterns["cjk"])

    @property
    def vocab_table(self):
        """The token -> id `tf.lookup.StaticHashTable` (-1 for unknown tokens)."""
        return self._table

    def _texts(self, texts, what):
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        if texts.shape.rank is not None and texts.shape.rank != 1:
            raise ValueError(f"{what} must have shape [batch], got {texts.shape}")
        # Transcoding drops invalid sequences, so a valid text comes back unchanged.
        valid = tf.equal(tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="ignore"),
                         texts)
        first_bad = tf.reshape(tf.where(tf.logical_not(valid)), [-1])[:1]
        check = tf.debugging.Assert(
            tf.reduce_all(valid),
            [f"{what} holds invalid UTF-8 at batch index", first_bad],
            name="check_utf8")
        with tf.control_dependencies([check]):
            return tf.identity(texts)

    def basic_tokenize(self, texts, name="texts"):
        """Words of each text, as `BertTokenizer.basic_tokenize`.

        Args:
            texts: string tensor of shape [batch].
            name: how errors name the input. Defaults to "texts".

        Returns:
            A string RaggedTensor [batch, words].
        """
        return self._basic_tokenize(self._texts(texts, name))

    def _basic_tokenize(self, texts):
        """`basic_tokenize` of texts already checked to be valid UTF-8."""
        texts = tf.strings.regex_replace(texts, self._removed_pattern, "")
        texts = tf.strings.regex_replace(texts, self._cjk_pattern, r" \0 ")
        if self._do_lower_case:
            # Lowercasing the whole text equals lowercasing word by word: no
            # separator is cased or case-ignorable, so the final-sigma context ends
            # at word boundaries in both.
            texts = tf.strings.lower(texts, encoding="utf-8")
            texts = tf_text.normalize_utf8(texts, "NFD")
            texts = tf.strings.regex_replace(texts, self._mark_pattern, "")
        return tf_text.regex_split(texts, self._split_pattern, self._keep_pattern)

    def tokenize_words(self, texts, name="texts"):
        """WordPiece ids grouped by word, for whole-word masking.

        Args:
            texts: string tensor of shape [batch].
            name: how errors name the input. Defaults to "texts".

        Returns:
            An int64 RaggedTensor [batch, words, pieces].
        """
        return self._wordpieces(self.basic_tokenize(texts, name))

    def _wordpieces(self, words):
        """WordPiece ids of a string RaggedTensor of words ([..., words] → [..., words, pieces])."""
        flat = words.flat_values
        too_long = tf.strings.length(flat, unit="UTF8_CHAR") > MAX_INPUT_CHARS_PER_WORD
        # "[UNK]" is itself in the vocabulary, so it comes back as one [UNK] piece.
        flat = tf.where(too_long, tf.constant(features.UNK_TOKEN), flat)
        return self._wordpiece.tokenize(words.with_flat_values(flat))

    def tokenize_words_with_offsets(self, texts, name="texts"):
        """WordPiece ids grouped by word, with each word's byte span in the input text.

        The words and ids are exactly those of `tokenize_words`; the spans point into
        the original (un-normalized) text, so predictions on words map back to its
        characters. The text is split before normalization (on whitespace,
        punctuation and CJK characters), each piece is then cleaned and normalized;
        the rare piece that normalization splits again (a character whose
        decomposition is punctuation) gives sub-words sharing the piece's span.

        Args:
            texts: string tensor of shape [batch].
            name: how errors name the input. Defaults to "texts".

        Returns:
            (ids, starts, ends): int64 RaggedTensor [batch, words, pieces] and int64
            RaggedTensors [batch, words] of byte offsets (end exclusive).
        """
        texts = self._texts(texts, name)
        # The split kernel stops at NUL; U+0001 has the same length and is deleted
        # by the clean-up below just as NUL is, so spans and words are unchanged.
        texts = tf.strings.regex_replace(texts, "\\x00", "\x01")
        pieces, starts, ends = tf_text.regex_split_with_offsets(
            texts, self._raw_split_pattern, self._raw_keep_pattern)
        flat = tf.strings.regex_replace(pieces.flat_values, self._removed_pattern, "")
        if self._do_lower_case:
            flat = tf.strings.lower(flat, encoding="utf-8")
            flat = tf_text.normalize_utf8(flat, "NFD")
            flat = tf.strings.regex_replace(flat, self._mark_pattern, "")
        # (pieces, (words)): normally one word per piece; none for an emptied piece.
        words = tf_text.regex_split(flat, self._split_pattern, self._keep_pattern)
        per_piece = words.row_lengths()
        word_starts = tf.repeat(starts.flat_values, per_piece)
        word_ends = tf.repeat(ends.flat_values, per_piece)
        per_row = tf.reduce_sum(tf.RaggedTensor.from_row_lengths(per_piece, pieces.row_lengths()),
                                axis=1)
        ids = self._wordpieces(tf.RaggedTensor.from_row_lengths(words.flat_values, per_row))
        return (ids, tf.RaggedTensor.from_row_lengths(word_starts, per_row),
                tf.RaggedTensor.from_row_lengths(word_ends, per_row))

    def tokenize_whitespace_words_with_offsets(self, texts, name="texts"):
        """WordPiece ids of each whitespace-separated word, with its byte span.

        Words are what `str.split()` makes of the text, which is how CoNLL-style
        files give them (one word per line); each word's pieces are
        `BertTokenizer.tokenize(word)`, so punctuation inside a word ("@user",
        "U.S.", a URL) yields more pieces of the same word, not more words, and a
        word that tokenizes to nothing (only characters the original deletes) is
        one `[UNK]`, as `keras_bert.tasks.tagged_features` encodes it for training.

        Args:
            texts: string tensor of shape [batch].
            name: how errors name the input. Defaults to "texts".

        Returns:
            (ids, starts, ends): int64 RaggedTensor [batch, words, pieces] (at least
            one piece per word) and int64 RaggedTensors [batch, words] of byte offsets
            of each word in the text (end exclusive).
        """
        texts = self._texts(texts, name)
        # The split kernel stops at NUL; U+0001 has the same length and is deleted
        # by the tokenizer just as NUL is.
        texts = tf.strings.regex_replace(texts, "\\x00", "\x01")
        whitespace = re2_patterns()["whitespace"]
        words, starts, ends = tf_text.regex_split_with_offsets(texts, whitespace + "+", "")
        # The words are pieces of checked text: no second UTF-8 check.
        ids = self._wordpieces(self._basic_tokenize(words.flat_values)).merge_dims(1, 2)  # (words, (pieces))
        lengths = ids.row_lengths()
        unk = tf.RaggedTensor.from_row_lengths(
            tf.fill(tf.shape(lengths), tf.constant(self.unk_id, tf.int64)), tf.ones_like(lengths))
        ids = _keep_first(tf.concat([ids, unk], axis=1), tf.maximum(lengths, 1))
        ids = tf.RaggedTensor.from_row_lengths(ids, words.row_lengths())
        return ids, starts, ends

    def tokenize(self, texts, name="texts"):
        """WordPiece ids of each text.

        Args:
            texts: string tensor of shape [batch].
            name: how errors name the input. Defaults to "texts".

        Returns:
            An int64 RaggedTensor [batch, pieces].
        """
        return self.tokenize_words(texts, name).merge_dims(1, 2)

    def encode(self, texts, texts_b=None, max_seq_length=128, dtype=tf.int32):
        """Model inputs, truncated and padded as `BertTokenizer.encode`.

        Args:
            texts: string tensor of shape [batch].
            texts_b: second texts of pairs, shape [batch]. Defaults to None.
            max_seq_length: output length (a Python int). Defaults to 128.
            dtype: tf.int32 or tf.int64. Defaults to tf.int32.

        Returns:
            A dict "input_ids", "segment_ids", "input_mask" of dense
            `[batch, max_seq_length]` tensors of `dtype`.
        """
        pair = texts_b is not None
        _check_max_seq_length(max_seq_length, pair)
        ids_a = self.tokenize(texts)  # (batch, (pieces))
        len_a = ids_a.row_lengths()
        if pair:
            ids_b = self.tokenize(texts_b, "texts_b")
            len_b = ids_b.row_lengths()
            same = tf.debugging.assert_equal(
                tf.size(len_a), tf.size(len_b),
                message="texts_b must have as many entries as texts")
            with tf.control_dependencies([same]):
                len_b = tf.identity(len_b)
            new_a, new_b = _truncated_pair_lengths_tf(len_a, len_b, max_seq_length - 3)
            ids_b = _keep_first(ids_b, new_b)
        else:
            new_a = tf.minimum(len_a, max_seq_length - 2)
        ids_a = _keep_first(ids_a, new_a)

        batch = tf.shape(len_a, out_type=tf.int64)[0]
        cls = tf.fill([batch, 1], tf.constant(self.cls_id, tf.int64))
        sep = tf.fill([batch, 1], tf.constant(self.sep_id, tf.int64))
        parts = [cls, ids_a, sep]
        segments = [tf.zeros_like(cls), tf.zeros_like(ids_a), tf.zeros_like(sep)]
        if pair:
            parts += [ids_b, sep]
            segments += [tf.ones_like(ids_b), tf.ones_like(sep)]
        input_ids = tf.concat(parts, axis=1)  # (batch, (tokens))
        segment_ids = tf.concat(segments, axis=1)
        shape = [None, max_seq_length]
        return {
            features.INPUT_IDS: tf.cast(
                input_ids.to_tensor(default_value=self.pad_id, shape=shape), dtype),
            features.SEGMENT_IDS: tf.cast(
                segment_ids.to_tensor(default_value=0, shape=shape), dtype),
            features.INPUT_MASK: tf.cast(
                tf.ones_like(input_ids).to_tensor(default_value=0, shape=shape), dtype),
        }


def _truncated_pair_lengths_tf(len_a, len_b, max_tokens):
    """Tensor version of `truncated_pair_lengths` (int64 [batch] lengths)."""
    max_tokens = tf.constant(max_tokens, tf.int64)
    fits = len_a + len_b <= max_tokens
    cut_b = tf.minimum(len_b, tf.maximum(max_tokens - len_a, max_tokens // 2))
    cut_a = tf.minimum(len_a, max_tokens - cut_b)
    return tf.where(fits, len_a, cut_a), tf.where(fits, len_b, cut_b)


def _keep_first(ragged, lengths):
    """The first `lengths[i]` values of each row of a 2-D RaggedTensor."""
    positions = tf.ragged.range(ragged.row_lengths())  # (batch, (pieces))
    return tf.ragged.boolean_mask(ragged, positions < tf.expand_dims(lengths, 1))
