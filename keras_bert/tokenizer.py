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

`BertTokenizer` is the pure-Python tokenizer (data preparation, Beam); its
`token_ids_batch` and `encode_batch` run whole batches through the in-graph path
(same ids, several times faster). `InGraphBertTokenizer` is a `tf.Module` for
`tf.function`, `tf.data` and SavedModel export; it reads the same vocabulary file,
which becomes a SavedModel asset.

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

import bisect
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


@functools.lru_cache(maxsize=None)
def _code_point_table():
    """(categories, isspace) of every code point, surrogates marked "Cs" / False."""
    categories = np.empty(0x110000, dtype="<U2")
    space = np.zeros(0x110000, dtype=bool)
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            categories[cp] = "Cs"
            continue
        char = chr(cp)
        categories[cp] = unicodedata.category(char)
        space[cp] = char.isspace()
    return categories, space


@functools.lru_cache(maxsize=None)
def char_class_ranges():
    """The tokenizer's character classes as code-point ranges, computed once.

    One pass over the code points (the classes are those of `is_removed_char`,
    `str.isspace`, `is_punctuation_char` and category Mn, surrogates excluded).

    Returns:
        A dict with keys "removed", "whitespace", "cjk", "punctuation" and
        "nonspacing_mark", each a tuple of inclusive (first, last) ranges.
        "whitespace" is what `str.split()` splits on (`str.isspace`).
    """
    categories, space = _code_point_table()
    code_points = np.arange(0x110000)
    surrogate = (code_points >= 0xD800) & (code_points <= 0xDFFF)
    removed = ((code_points == 0) | (code_points == 0xFFFD)
               | (categories == "Cc") | (categories == "Cf"))
    removed[[ord("\t"), ord("\n"), ord("\r")]] = False
    removed &= ~surrogate
    ascii_punctuation = (((code_points >= 33) & (code_points <= 47)) | ((code_points >= 58) & (code_points <= 64))
                         | ((code_points >= 91) & (code_points <= 96))
                         | ((code_points >= 123) & (code_points <= 126)))
    punctuation = (ascii_punctuation | (np.char.startswith(categories, "P"))) & ~surrogate
    return {
        "removed": _ranges_of(removed),
        "whitespace": _ranges_of(space),
        "kept_whitespace": _ranges_of(space & ~removed),
        "cjk": CJK_RANGES,
        "punctuation": _ranges_of(punctuation),
        "nonspacing_mark": _ranges_of((categories == "Mn") & ~surrogate),
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
# The fast kernel's view of characters, and ICU's, checked against Python's.
# ---------------------------------------------------------------------------

# Words of at most this many UTF-8 bytes are pieced by the fast kernel; a longer
# word may exceed the original's 200-character limit, so its text takes the
# exact (split, then piece) path.
MAX_FAST_WORD_BYTES = MAX_INPUT_CHARS_PER_WORD


def _ranges_of(mask):
    """Inclusive (first, last) ranges of the True entries of a boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return tuple((int(lo), int(hi) - 1) for lo, hi in zip(edges[::2], edges[1::2]))


def _class_mask(ranges):
    """A boolean array over all code points, True inside the inclusive `ranges`."""
    mask = np.zeros(0x110000, dtype=bool)
    for lo, hi in ranges:
        mask[lo:hi + 1] = True
    return mask


@functools.lru_cache(maxsize=None)
def fast_split_mismatches():
    """Code points that the fast kernel splits words at unlike the tokenizer.

    tensorflow-text's `FastWordpieceTokenizer`, given whole text, splits it into
    words itself: at ICU whitespace and at the original's punctuation and CJK rule
    evaluated with ICU's Unicode tables. Where those tables differ from Python's
    (characters assigned in a newer Unicode version than Python's), the words
    would differ. This probes the kernel once per process on every code point,
    each in the context "a{c}a ", and compares the words it makes with the
    tokenizer's classes (whitespace, punctuation, CJK, other).

    Returns:
        A tuple of inclusive (first, last) code-point ranges, often a few dozen
        unassigned-in-Python characters; text holding one is tokenized on the exact
        path instead.
    """
    classes = char_class_ranges()
    expected = np.ones(0x110000, dtype=np.int64)  # words made of "a{c}a"
    expected[_class_mask(classes["whitespace"])] = 2
    expected[_class_mask(classes["punctuation"]) | _class_mask(classes["cjk"])] = 3
    cps = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)])
    # Every word comes back as one token: "a", or [UNK] for any other word (with
    # no continuation token in the vocabulary, no word has a second piece).
    kernel = tf_text.FastWordpieceTokenizer(
        [features.UNK_TOKEN, "a"], unknown_token=features.UNK_TOKEN, max_bytes_per_word=64)
    mismatched = np.zeros(0x110000, dtype=bool)
    with tf.init_scope():
        for chunk in np.array_split(cps, 16):
            units = np.empty((len(chunk), 4), dtype="<u4")
            units[:, 0] = units[:, 2] = ord("a")
            units[:, 1] = chunk
            units[:, 3] = ord(" ")
            text = units.tobytes().decode("utf-32-le").encode("utf-8")
            char_bytes = 1 + (chunk >= 0x80) + (chunk >= 0x800) + (chunk >= 0x10000)
            unit_starts = np.concatenate([[0], np.cumsum(3 + char_bytes)[:-1]])
            _, starts, _ = kernel.tokenize_with_offsets(tf.constant([text]))
            unit_of_word = np.searchsorted(unit_starts, starts.flat_values.numpy(), "right") - 1
            words = np.bincount(unit_of_word, minlength=len(chunk))
            mismatched[chunk] = words != expected[chunk]
    return _ranges_of(mismatched)


@functools.lru_cache(maxsize=None)
def icu_normalization_mismatches():
    """Code points whose in-graph (ICU) lowercasing and NFD may differ from Python's.

    Characters unassigned in Python's Unicode tables are all listed (ICU may know
    them). Every assigned character except private-use ones is probed once per
    process: ICU's and Python's lowercase + NFD are compared on the character in
    contexts that also expose its casing properties (the final-sigma rule) and its
    combining class (canonical reordering).

    Returns:
        A tuple of inclusive (first, last) code-point ranges. Uncased text without
        these characters is normalized identically by both tokenizers.
    """
    unassigned = np.zeros(0x110000, dtype=bool)
    probed = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        category = unicodedata.category(chr(cp))
        if category == "Cn":
            unassigned[cp] = True
        elif category != "Co" and cp >= 0x80:
            probed.append(cp)
    contexts = ("{c}", "{c}\u03a3", "\u0391{c}\u03a3", "\u0391\u03a3{c}",
                "\u0391\u03a3{c}\u0391", "a\u0301{c}\u0316")
    template = " ".join(contexts)
    # In slices: all probes at once held ~35 MB that the process kept for good.
    for start in range(0, len(probed), 16384):
        chunk = probed[start:start + 16384]
        probes = [template.replace("{c}", chr(cp)) for cp in chunk]
        want = [unicodedata.normalize("NFD", " ".join(w.lower() for w in p.split(" ")))
                for p in probes]
        with tf.init_scope():
            got = tf_text.normalize_utf8(
                tf.strings.lower(tf.constant([p.encode("utf-8") for p in probes]), encoding="utf-8"),
                "NFD").numpy()
        for cp, g, w in zip(chunk, got, want):
            if g.decode("utf-8") != w:
                unassigned[cp] = True
    return _ranges_of(unassigned)


# Well-formed UTF-8: any number of Unicode scalar values (RE2 syntax).
_UTF8_TEXT = "[\\x{0}-\\x{d7ff}\\x{e000}-\\x{10ffff}]*"


# ---------------------------------------------------------------------------
# Vocabulary file.
# ---------------------------------------------------------------------------


def load_vocab(vocab_path):
    """Reads a BERT `vocab.txt`: one token per line, the line number is the id.

    Lines are split on "\\n" only and stripped of surrounding whitespace, as the
    original `load_vocab` does. Unlike the original, an empty line or a token
    listed twice is an error (the original keeps an empty token, and the last id
    of a repeated one). The one vocabulary reader of the project.

    Args:
        vocab_path: path of the vocabulary file (any `tf.io.gfile` path).

    Returns:
        A list of tokens, index = id.

    Raises:
        VocabularyError: the file is not UTF-8, has an empty line, lists a token
            twice or lacks one of `features.SPECIAL_TOKENS`.
    """
    with tf.io.gfile.GFile(vocab_path, "rb") as f:
        return parse_vocab(f.read(), vocab_path)


def parse_vocab(data, source):
    """The tokens of a `vocab.txt` read by other means (`load_vocab`'s rules and errors).

    Args:
        data: the file's bytes.
        source: the file's name, for error messages.

    Returns:
        A list of tokens, index = id.
    """
    vocab_path = source
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
        if not token:
            raise VocabularyError(f"{vocab_path}: line {i + 1} is empty; expected one token per line")
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
        self._batch_path = None  # built on the first batch call

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_batch_path"] = None  # TensorFlow objects are rebuilt, not pickled
        return state

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

    def token_ids_batch(self, texts):
        """Ids of many texts at once, through the in-graph fast path.

        Equal to `[self.convert_tokens_to_ids(self.tokenize(t)) for t in texts]`
        for every input (no special tokens, no truncation), several times faster
        on batches. Uncased text holding a character whose lowercasing or NFD
        TensorFlow's ICU might do unlike Python (`icu_normalization_mismatches`:
        characters newer than Python's Unicode tables) is tokenized in Python, as
        is a `str` that cannot be UTF-8 encoded (lone surrogates).

        Args:
            texts: sequence of str or UTF-8 bytes.

        Returns:
            A list with, per text, the list of its ids.

        Raises:
            TypeError: an entry is None (or not text); the message names its index.
            TokenizerInputError: bytes at some index are not UTF-8 (index and byte
                offset in the message).
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a sequence of texts, not a single text")
        texts = list(texts)
        return self._ids_batch(texts, [f"texts[{i}]" for i in range(len(texts))])

    def _ids_batch(self, texts, names, chunk_size=2048):
        """Ids of `texts` (str or bytes), `names[i]` naming entry i in errors."""
        path = self._batch_path
        if path is None:
            path = self._batch_path = _BatchPath(self._tokens, self._do_lower_case)
        encoded = [path.graph_input(text, name) for text, name in zip(texts, names)]
        out = [None] * len(texts)
        graph_rows = [i for i, data in enumerate(encoded) if data is not None]
        for start in range(0, len(graph_rows), chunk_size):
            rows = graph_rows[start:start + chunk_size]
            for i, ids in zip(rows, path.ids([encoded[i] for i in rows])):
                out[i] = ids
        for i, data in enumerate(encoded):
            if data is None:
                out[i] = self._ids(texts[i], names[i])
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
        # One batch of every text, first and second alike, in the order the
        # per-pair loop would have met them (so the first bad entry is the one named).
        batch, names, slots = [], [], []
        for i, text in enumerate(texts):
            text_b = None if texts_b is None else texts_b[i]
            if max_seq_length is not None:
                _check_max_seq_length(max_seq_length, text_b is not None)
            batch.append(text)
            names.append(f"texts[{i}]")
            if text_b is not None:
                batch.append(text_b)
                names.append(f"texts_b[{i}]")
            slots.append(text_b is not None)
        ids = iter(self._ids_batch(batch, names))
        rows = []
        for pair in slots:
            ids_a = next(ids)
            rows.append(self._assemble(ids_a, next(ids) if pair else None, max_seq_length))
        names = (features.INPUT_IDS, features.SEGMENT_IDS, features.INPUT_MASK)
        if max_seq_length is None:
            return {name: [row[name] for row in rows] for name in names}
        return {
            name: np.array([row[name] for row in rows], dtype=dtype).reshape(-1, max_seq_length)
            for name in names
        }


class _ClassSearch:
    """Whether a text holds a character of a set of code-point ranges, fast.

    One regular expression of the whole class is slow: `re` tests a character
    against the class's basic-plane part in a bitmap but against each range above
    U+FFFF in turn, so with the hundreds of astral ranges of
    `icu_normalization_mismatches` every character of a non-ASCII text cost
    hundreds of comparisons (about 0.7 ms for a 200-character line). Here the
    basic plane is one expression and the rare astral characters are looked up by
    bisection.

    Args:
        ranges: inclusive `(first, last)` code-point ranges, sorted, not overlapping.
    """

    _ASTRAL = re.compile("[\U00010000-\U0010ffff]")

    def __init__(self, ranges):
        bmp = [(lo, min(hi, 0xFFFF)) for lo, hi in ranges if lo <= 0xFFFF]
        self._bmp = re.compile(_python_class(bmp)) if bmp else None
        astral = [(max(lo, 0x10000), hi) for lo, hi in ranges if hi > 0xFFFF]
        self._astral_starts = [lo for lo, _ in astral]
        self._astral_ends = [hi for _, hi in astral]

    def found_in(self, text):
        if self._bmp is not None and self._bmp.search(text):
            return True
        if self._astral_starts and not text.isascii():
            for char in self._ASTRAL.findall(text):
                i = bisect.bisect_right(self._astral_starts, ord(char)) - 1
                if i >= 0 and ord(char) <= self._astral_ends[i]:
                    return True
        return False


class _BatchPath:
    """`BertTokenizer`'s batch path: an in-graph tokenizer over its token list."""

    def __init__(self, tokens, do_lower_case):
        self._tokenizer = InGraphBertTokenizer._from_tokens(tokens, do_lower_case)
        self._ids_fn = tf.function(self._flat_ids, input_signature=[tf.TensorSpec([None], tf.string)],
                                   autograph=False)
        # Uncased text with any of these characters is left to Python (see
        # `BertTokenizer.token_ids_batch`).
        self._python_only = None
        if do_lower_case:
            mismatches = icu_normalization_mismatches()
            if mismatches:
                self._python_only = _ClassSearch(mismatches)

    def _flat_ids(self, texts):
        ids = self._tokenizer.tokenize(texts)
        return ids.flat_values, ids.row_splits

    def graph_input(self, text, name):
        """`text` as UTF-8 bytes for the graph, or None where Python must tokenize it.

        Raises the per-text path's errors for entries that are not text.
        """
        if isinstance(text, str):
            if self._python_only is not None and not text.isascii() and self._python_only.found_in(text):
                return None
            try:
                return text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates
                return None
        checked = _as_text(text, name)  # bytes: valid UTF-8, or raises naming the entry
        if (self._python_only is not None and not checked.isascii()
                and self._python_only.found_in(checked)):
            return None
        return bytes(text)

    def ids(self, data):
        """Id lists of a list of UTF-8 byte strings."""
        values, splits = self._ids_fn(tf.constant(data, tf.string))
        values = values.numpy().tolist()
        splits = splits.numpy().tolist()
        return [values[a:b] for a, b in zip(splits[:-1], splits[1:])]


# ---------------------------------------------------------------------------
# In-graph tokenizer.
# ---------------------------------------------------------------------------


class InGraphBertTokenizer(_VocabularyInfo, tf.Module):
    """BERT's WordPiece tokenizer as TensorFlow ops, identical to `BertTokenizer`.

    Usable eagerly, inside `tf.function`, `tf.data` and exported SavedModels: the
    vocabulary lookup table is tracked, so `vocab.txt` becomes a SavedModel asset.
    Inputs are string tensors of shape `[batch]` (any batch size, including 0).
    Invalid UTF-8 raises `tf.errors.InvalidArgumentError` ("invalid UTF-8").

    `tokenize`, `tokenize_words` and `encode` take the fast path: the text is
    cleaned and normalized with core string ops and `normalize_utf8`, then
    tensorflow-text's `FastWordpieceTokenizer` (linear-time WordPiece, in
    tensorflow-text since 2.7) splits it into words and pieces in one pass. A
    text the fast kernel could get wrong takes the exact path instead (split with
    `regex_split` on the tokenizer's own character classes, then pieced): one
    with a word over `MAX_FAST_WORD_BYTES` bytes (the original's limit counts
    characters), or one holding a character that the kernel's ICU tables classify
    unlike Python's (`fast_split_mismatches`). The offsets methods always split
    with `regex_split`, as their spans must point into the raw text.

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
        with tf.io.gfile.GFile(vocab_path, "rb") as f:
            data = f.read()
        tokens = parse_vocab(data, vocab_path)
        raw_lines = data.decode("utf-8").split("\n")
        for i, (line, token) in enumerate(zip(raw_lines, tokens)):
            if line.rstrip("\r") != token:
                raise VocabularyError(
                    f"{vocab_path}: line {i + 1} ({line!r}) has whitespace around its token; "
                    "the in-graph tokenizer needs the file to hold the tokens exactly")
        self._vocab_path = vocab_path
        self._build(tokens, do_lower_case, tf.lookup.TextFileInitializer(
            vocab_path,
            key_dtype=tf.string,
            key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
            value_dtype=tf.int64,
            value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        ))

    @classmethod
    def _from_tokens(cls, tokens, do_lower_case=True):
        """A tokenizer over a token list (no file; the table is built from the list)."""
        self = cls.__new__(cls)
        tf.Module.__init__(self)
        self._vocab_path = None
        tokens = list(tokens)
        self._build(tokens, do_lower_case, tf.lookup.KeyValueTensorInitializer(
            tf.constant(tokens, tf.string), tf.range(len(tokens), dtype=tf.int64)))
        return self

    def _build(self, tokens, do_lower_case, table_initializer):
        ids = {token: i for i, token in enumerate(tokens)}
        self._do_lower_case = bool(do_lower_case)
        self._vocab_size = len(tokens)
        self._special_ids = {t: ids[t] for t in features.SPECIAL_TOKENS}
        # The WordPiece kernel treats -1 as "not in the vocabulary".
        self._table = tf.lookup.StaticHashTable(table_initializer, default_value=-1)

        def body_bytes(token):
            if token.startswith(CONTINUATION_PREFIX):
                token = token[len(CONTINUATION_PREFIX):]
            return len(token.encode("utf-8"))

        # The fast kernels hold the vocabulary in a trie with a 256-byte limit per
        # token. A token that no word can match there (empty, or longer than any
        # word the kernel sees) is stood in for by one holding a space, which no
        # word contains, so that ids keep their positions.
        def kernel_vocab(limit):
            return [t if 0 < body_bytes(t) <= limit else f" {i}" for i, t in enumerate(tokens)]

        # Words of the exact path reach 200 characters (800 bytes); when every token
        # fits the trie they are pieced by the fast kernel too, else by the
        # classic one over the hash table.
        if all(body_bytes(t) <= 256 for t in tokens):
            self._wordpiece = tf_text.FastWordpieceTokenizer(
                kernel_vocab(256), suffix_indicator=CONTINUATION_PREFIX,
                max_bytes_per_word=4 * MAX_INPUT_CHARS_PER_WORD, token_out_type=tf.int64,
                unknown_token=features.UNK_TOKEN, no_pretokenization=True)
        else:
            # Words over 200 characters never reach the kernel (they are replaced by
            # "[UNK]" first), so its byte limit only has to admit 200 4-byte characters.
            self._wordpiece = tf_text.WordpieceTokenizer(
                self._table,
                suffix_indicator=CONTINUATION_PREFIX,
                max_bytes_per_word=4 * MAX_INPUT_CHARS_PER_WORD,
                token_out_type=tf.int64,
                unknown_token=features.UNK_TOKEN,
            )
        # Whole text to pieces; a word over MAX_FAST_WORD_BYTES becomes one [UNK]
        # spanning it, which sends its text to the exact path.
        self._fast = tf_text.FastWordpieceTokenizer(
            kernel_vocab(MAX_FAST_WORD_BYTES), suffix_indicator=CONTINUATION_PREFIX,
            max_bytes_per_word=MAX_FAST_WORD_BYTES, token_out_type=tf.int64,
            unknown_token=features.UNK_TOKEN, no_pretokenization=False)
        # Which ids continue a word (the first piece of a word never starts with
        # "#", which is punctuation).
        self._continues_word = tf.constant(
            [t.startswith(CONTINUATION_PREFIX) and len(t) > len(CONTINUATION_PREFIX)
             for t in tokens], tf.bool)
        patterns = re2_patterns()
        self._removed_pattern = patterns["removed"]
        self._cjk_pattern = patterns["cjk"]
        self._mark_pattern = patterns["nonspacing_mark"]
        self._split_pattern = "%s+|%s" % (patterns["whitespace"], patterns["punctuation"])
        self._keep_pattern = patterns["punctuation"]
        mismatches = fast_split_mismatches()
        # Normalized text the fast kernel splits exactly as the tokenizer does.
        self._fast_text_pattern = ("[^%s]*" % _re2_class(mismatches)[1:-1]) if mismatches else None
        # ASCII text that needs no check: the kernel splits these characters as the
        # tokenizer does (all of ASCII but the controls the tokenizer deletes anyway,
        # unless a kernel's tables say otherwise).
        odd = _class_mask(mismatches)[:0x80] & ~_class_mask(char_class_ranges()["removed"])[:0x80]
        self._ascii_pattern = _re2_class(_ranges_of(~odd)) + "*"
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

    def _texts(self, texts, what, rows=None):
        """`texts` as a checked [batch] string tensor (an assertion on invalid UTF-8).

        `rows` (int64 [batch]) are the texts' indices in the caller's batch, for the
        error message; by default 0, 1, 2, ...
        """
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        if texts.shape.rank is not None and texts.shape.rank != 1:
            raise ValueError(f"{what} must have shape [batch], got {texts.shape}")
        # RE2 matches a character class only on shortest-form UTF-8 of its code
        # points, so this accepts exactly the well-formed UTF-8 (no surrogates).
        valid = tf.strings.regex_full_match(texts, _UTF8_TEXT)
        first_bad = tf.reshape(tf.where(tf.logical_not(valid)), [-1])[:1]
        if rows is not None:
            first_bad = tf.gather(rows, first_bad)
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
        texts = self._normalize_case(texts)
        return tf_text.regex_split(texts, self._split_pattern, self._keep_pattern)

    def _normalize_case(self, texts):
        """Lowercasing and accent stripping (uncased), on cleaned text."""
        if self._do_lower_case:
            # Lowercasing the whole text equals lowercasing word by word: no
            # separator is cased or case-ignorable, so the final-sigma context ends
            # at word boundaries in both.
            texts = tf.strings.lower(texts, encoding="utf-8")
            texts = tf_text.normalize_utf8(texts, "NFD")
            texts = tf.strings.regex_replace(texts, self._mark_pattern, "")
        return texts

    def _fast_pieces(self, texts, what, by_word):
        """WordPiece ids of texts (checked here), on the fast path.

        Args:
            texts: string tensor [batch].
            what: how errors name the input.
            by_word: group the pieces by word.

        Returns:
            An int64 RaggedTensor [batch, pieces], or [batch, words, pieces].
        """
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        if texts.shape.rank is not None and texts.shape.rank != 1:
            raise ValueError(f"{what} must have shape [batch], got {texts.shape}")
        # Most text is ASCII: valid UTF-8, lowercased by the ASCII rule alone, and
        # split by the kernel as by the tokenizer. Only the other rows go through
        # the UTF-8 check, ICU's lowercasing and NFD, and the character check.
        plain = tf.strings.regex_full_match(texts, self._ascii_pattern)
        other_rows = tf.reshape(tf.where(tf.logical_not(plain)), [-1])  # (other,)
        other = self._texts(tf.gather(texts, other_rows), what, other_rows)
        cleaned = tf.strings.regex_replace(texts, self._removed_pattern, "")
        other_normalized = self._normalize_case(
            tf.strings.regex_replace(other, self._removed_pattern, ""))
        # The other rows are put in place even when cased (where they are already
        # there), so that the output depends on their UTF-8 check.
        normalized = tf.tensor_scatter_nd_update(
            tf.strings.lower(cleaned) if self._do_lower_case else cleaned,
            tf.expand_dims(other_rows, 1), other_normalized)
        # CJK characters need no spaces here: the kernel makes each a word, and
        # lowercasing and NFD neither make nor unmake them.
        ids, starts, ends = self._fast.tokenize_with_offsets(normalized)  # (batch, (pieces))
        # A word over the kernel's byte limit comes back as one [UNK] spanning it;
        # [UNK]s are few, so only they are looked at.
        unk = tf.reshape(tf.where(tf.equal(ids.flat_values, self.unk_id)), [-1])  # (unks,)
        span = tf.gather(ends.flat_values, unk) - tf.gather(starts.flat_values, unk)
        too_long = tf.boolean_mask(unk, span > MAX_FAST_WORD_BYTES)
        long_rows = tf.searchsorted(ids.row_splits, too_long, side="right", out_type=tf.int64) - 1
        num_rows = tf.shape(texts, out_type=tf.int64)[:1]
        exact = tf.scatter_nd(tf.expand_dims(long_rows, 1), tf.ones_like(long_rows), num_rows)
        if self._fast_text_pattern is not None:
            odd = tf.logical_not(tf.strings.regex_full_match(other_normalized, self._fast_text_pattern))
            exact += tf.scatter_nd(tf.expand_dims(other_rows, 1), tf.cast(odd, tf.int64), num_rows)
        exact_rows = tf.reshape(tf.where(exact > 0), [-1])  # (exact,)
        if by_word:
            flat = ids.flat_values
            starts_word = tf.logical_not(tf.gather(self._continues_word, flat))
            pieces = tf.RaggedTensor.from_row_starts(
                flat, tf.reshape(tf.where(starts_word), [-1]), validate=False)  # (words, (pieces))
            per_row = tf.reduce_sum(tf.cast(ids.with_flat_values(starts_word), tf.int64), axis=1)
            fast = tf.RaggedTensor.from_row_lengths(pieces, per_row, validate=False)
        else:
            fast = ids

        def with_exact_rows():
            # Texts on the exact path are checked UTF-8: ASCII, or checked above.
            words = self._wordpieces(self._basic_tokenize(tf.gather(texts, exact_rows)))
            return _replace_rows(fast, exact_rows, words if by_word else words.merge_dims(1, 2))

        # Usually no text needs the exact path: skip it (and the copy) then.
        return tf.cond(tf.size(exact_rows) > 0, with_exact_rows, lambda: fast)

    def tokenize_words(self, texts, name="texts"):
        """WordPiece ids grouped by word, for whole-word masking.

        Args:
            texts: string tensor of shape [batch].
            name: how errors name the input. Defaults to "texts".

        Returns:
            An int64 RaggedTensor [batch, words, pieces].
        """
        return self._fast_pieces(texts, name, by_word=True)

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
        return self._fast_pieces(texts, name, by_word=False)

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


def _replace_rows(ragged, rows, replacement):
    """`ragged` with its rows `rows` (int64 [n]) replaced by the rows of `replacement`."""
    num_rows = ragged.nrows()
    both = tf.concat([ragged, replacement], axis=0)
    index = tf.tensor_scatter_nd_update(
        tf.range(num_rows), tf.expand_dims(rows, 1),
        num_rows + tf.range(tf.shape(rows, out_type=tf.int64)[0]))
    return tf.gather(both, index)


def _keep_first(ragged, lengths):
    """The first `lengths[i]` values of each row of a 2-D RaggedTensor."""
    positions = tf.ragged.range(ragged.row_lengths())  # (batch, (pieces))
    return tf.ragged.boolean_mask(ragged, positions < tf.expand_dims(lengths, 1))
