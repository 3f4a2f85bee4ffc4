"""Learning a WordPiece vocabulary from word counts.

Words are first split exactly as `keras_bert.tokenizer` splits text (control
characters removed, punctuation and CJK ideographs on their own, lowercased and
accent-stripped for uncased vocabularies), so that every learned piece is one the
tokenizer can produce. The pieces are then chosen by tensorflow-text's WordPiece
learner (`tensorflow_text.tools.wordpiece_vocab.wordpiece_tokenizer_learner_lib`,
pure Python, the algorithm of tensorflow-text's `bert_vocab_from_dataset`), which
adds every character of the kept alphabet both as a word start and as a `##`
continuation, so any word made of those characters can be pieced without [UNK].
The vocabulary has exactly the size asked for, or `VocabSizeError` says that the
words cannot give it and what they give.

Example:
    >>> counts = {"The": 120, "quick": 5, "brown": 3, "fox": 9, "jumps": 4}
    >>> vocab = learn_wordpiece_vocab(counts, vocab_size=45)
    >>> len(vocab), vocab[:6]
    (45, ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'b'])
    >>> write_vocab(vocab, "vocab.txt")
"""

import collections
import math

import tensorflow as tf
from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

from keras_bert import features
from keras_bert.tokenizer import CONTINUATION_PREFIX, basic_tokenize


def count_words(texts, do_lower_case=True):
    """Counts the words of `texts` as the BERT tokenizer splits them.

    Args:
        texts: iterable of str (or UTF-8 bytes).
        do_lower_case: lowercase and strip accents. Defaults to True.

    Returns:
        A `collections.Counter` word -> count.
    """
    counts = collections.Counter()
    for text in texts:
        counts.update(basic_tokenize(text, do_lower_case))
    return counts


class VocabSizeError(ValueError):
    """The words cannot give the vocabulary size asked for.

    Attributes:
        vocab: the largest vocabulary they give (a list of tokens, index = id).
        distinct_words: how many distinct words the learner was given.
    """

    def __init__(self, message, vocab, distinct_words):
        super().__init__(message)
        self.vocab = vocab
        self.distinct_words = distinct_words


def learn_wordpiece_vocab(
    word_counts,
    vocab_size,
    do_lower_case=True,
    reserved_tokens=features.SPECIAL_TOKENS,
    max_unique_chars=1000,
    max_token_length=50,
    max_input_words=5_000_000,
    num_iterations=4,
    slack_ratio=0.05,
    lower_thresh=1,
):
    """Learns a WordPiece vocabulary of exactly `vocab_size` tokens.

    tensorflow-text's learner is top-down: for a count threshold it keeps every
    piece (word start or `##` continuation) seen at least that often once longer
    pieces have claimed their share of the counts, and it searches the threshold
    that gives the size asked for. Its own search stops at `lower_thresh` and at
    any size up to `slack_ratio` short, and may end above `vocab_size`; here the
    search looks for the highest threshold whose vocabulary has at least
    `vocab_size` tokens (stopping early at one within `slack_ratio` above it), and
    the least frequent learnt pieces are dropped down to `vocab_size` (never a
    character or its `##` form, so every word of the alphabet stays
    tokenizable).

    Args:
        word_counts: dict word -> count, or iterable of (word, count). Words may be
            raw: each is re-split and normalized with the tokenizer's rules first.
        vocab_size: the number of tokens of the vocabulary (reserved included).
        do_lower_case: lowercase and strip accents, as the tokenizer that will use
            the vocabulary. Defaults to True.
        reserved_tokens: tokens listed first, in order. Defaults to
            `features.SPECIAL_TOKENS` ([PAD] [UNK] [CLS] [SEP] [MASK]).
        max_unique_chars: the alphabet keeps this many most frequent characters;
            words with other characters are left out of learning. Defaults to 1000.
        max_token_length: words longer than this are left out of learning.
            Defaults to 50.
        max_input_words: only this many most frequent words are learnt from.
            Defaults to 5,000,000.
        num_iterations: refinement passes of the learner. Defaults to 4.
        slack_ratio: the threshold search stops at a vocabulary at most this
            fraction larger than `vocab_size` (then trimmed). Defaults to 0.05.
        lower_thresh: the lowest piece count the threshold search tries. Defaults
            to 1 (any piece the words contain).

    Returns:
        The vocabulary as a list of `vocab_size` tokens (index = id), reserved
        tokens first, then the characters, then the learnt pieces, most frequent
        first.

    Raises:
        VocabSizeError: the words are too few or too alike to give `vocab_size`
            tokens even at `lower_thresh` (or their alphabet alone needs more);
            it carries the largest vocabulary they give.
        ValueError: `vocab_size` leaves no room beyond the reserved tokens, or a
            count is negative.
    """
    reserved_tokens = list(reserved_tokens)
    if vocab_size <= len(reserved_tokens):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beyond the "
                         f"{len(reserved_tokens)} reserved tokens")
    items = word_counts.items() if isinstance(word_counts, dict) else word_counts
    normalized = collections.Counter()
    for i, (word, count) in enumerate(items):
        if count < 0:
            raise ValueError(f"word_counts entry {i} ({word!r}) has a negative count {count}")
        for piece in basic_tokenize(word, do_lower_case):
            normalized[piece] += int(count)
    reserved = set(reserved_tokens)
    pairs = sorted(((w, c) for w, c in normalized.items() if w not in reserved and c > 0),
                   key=lambda wc: (-wc[1], wc[0]))
    params = learner.Params(
        upper_thresh=None, lower_thresh=lower_thresh, num_iterations=num_iterations,
        max_input_tokens=max_input_words, max_token_length=max_token_length,
        max_unique_chars=max_unique_chars, vocab_size=vocab_size, slack_ratio=slack_ratio,
        include_joiner_token=True, joiner=CONTINUATION_PREFIX, reserved_tokens=reserved_tokens)
    words = learner.get_input_words(pairs, reserved_tokens, max_token_length)
    alphabet = learner.get_allowed_chars(words, max_unique_chars)
    words = learner.filter_input_words(words, alphabet, max_input_words)
    chars = learner.extract_char_tokens(words)
    essential = reserved | chars | {CONTINUATION_PREFIX + c for c in chars}

    if len(essential) > vocab_size:
        raise VocabSizeError(
            f"vocab_size={vocab_size} is too small for the words' alphabet: its "
            f"{len(chars)} characters and their ## forms need {len(essential)} tokens",
            [*reserved_tokens, *sorted(chars), *sorted(CONTINUATION_PREFIX + c for c in chars)],
            len(words))

    def learn_at(thresh):
        # A word never is "##" (it splits as punctuation): the learner's bare joiner
        # entry would be dead weight.
        return [t for t in learner.learn_with_thresh(words, thresh, params)
                if t != CONTINUATION_PREFIX]

    lowest = max(1, lower_thresh)
    low, high = lowest, max([c for _, c in words], default=lowest)
    enough, largest = None, [*reserved_tokens, *sorted(chars)]
    while low <= high:  # The size falls as the threshold rises.
        # Bisected on a log scale: sizes change with the threshold's order of
        # magnitude, and each try costs a full pass of the learner.
        thresh = min(high, max(low, round(math.sqrt(low * high))))
        vocab = learn_at(thresh)
        if len(vocab) >= vocab_size:
            enough = vocab
            if len(vocab) <= vocab_size * (1 + slack_ratio):
                break
            low = thresh + 1
        else:
            largest = max(largest, vocab, key=len)
            high = thresh - 1
    if enough is None:
        raise VocabSizeError(
            f"too few distinct words for a vocabulary of {vocab_size} tokens: "
            f"{len(words)} distinct words give at most {len(largest)} tokens (with every "
            f"piece seen at least {lowest} time{'s' if lowest > 1 else ''})", largest, len(words))
    # The learner lists reserved tokens, characters, then pieces by falling count:
    # the last pieces that are no character go.
    drop = len(enough) - vocab_size
    kept = []
    for token in reversed(enough):
        if drop and token not in essential:
            drop -= 1
        else:
            kept.append(token)
    return kept[::-1]


def write_vocab(vocab, path):
    """Writes a vocabulary as `vocab.txt`: one token per line, "\\n" line ends.

    Args:
        vocab: list of tokens, index = id.
        path: output path (any `tf.io.gfile` path).
    """
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(token + "\n" for token in vocab))
