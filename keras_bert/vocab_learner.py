"""Learning a WordPiece vocabulary from word counts.

Words are first split exactly as `keras_bert.tokenizer` splits text (control
characters removed, punctuation and CJK ideographs on their own, lowercased and
accent-stripped for uncased vocabularies), so that every learned piece is one the
tokenizer can produce. The pieces are then chosen by tensorflow-text's WordPiece
learner (`tensorflow_text.tools.wordpiece_vocab.wordpiece_tokenizer_learner_lib`,
pure Python, the algorithm of tensorflow-text's `bert_vocab_from_dataset`), which
adds every character of the kept alphabet both as a word start and as a `##`
continuation, so any word made of those characters can be pieced without [UNK].

Example:
    >>> counts = {"The": 120, "quick": 5, "brown": 3, "fox": 9}
    >>> vocab = learn_wordpiece_vocab(counts, vocab_size=100)
    >>> write_vocab(vocab, "vocab.txt")
"""

import collections

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


def learn_wordpiece_vocab(
    word_counts,
    vocab_size,
    do_lower_case=True,
    reserved_tokens=features.SPECIAL_TOKENS,
    max_unique_chars=1000,
    max_token_length=50,
    num_iterations=4,
    slack_ratio=0.05,
    lower_thresh=10,
):
    """Learns a WordPiece vocabulary of at most `vocab_size` tokens.

    Args:
        word_counts: dict word -> count, or iterable of (word, count). Words may be
            raw: each is re-split and normalized with the tokenizer's rules first.
        vocab_size: the most tokens the vocabulary may hold (reserved included).
        do_lower_case: lowercase and strip accents, as the tokenizer that will use
            the vocabulary. Defaults to True.
        reserved_tokens: tokens listed first, in order. Defaults to
            `features.SPECIAL_TOKENS` ([PAD] [UNK] [CLS] [SEP] [MASK]).
        max_unique_chars: the alphabet keeps this many most frequent characters;
            words with other characters are left out of learning. Defaults to 1000.
        max_token_length: words longer than this are left out of learning.
            Defaults to 50.
        num_iterations: refinement passes of the learner. Defaults to 4.
        slack_ratio: the size may fall short of `vocab_size` by this fraction.
            Defaults to 0.05.
        lower_thresh: the lowest piece count the learner's threshold search tries;
            lower it for small corpora, where the default may stop well short of
            `vocab_size`. Defaults to 10.

    Returns:
        The vocabulary as a list of tokens (index = id), reserved tokens first.

    Raises:
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
    vocab = learner.learn(
        pairs,
        vocab_size=vocab_size,
        reserved_tokens=reserved_tokens,
        num_iterations=num_iterations,
        max_token_length=max_token_length,
        max_unique_chars=max_unique_chars,
        slack_ratio=slack_ratio,
        lower_thresh=lower_thresh,
        include_joiner_token=True,
        joiner=CONTINUATION_PREFIX,
    )
    # The learner may list the bare joiner; a word never is "##" (it splits as
    # punctuation), so the entry would be dead weight.
    return [t for t in vocab if t != CONTINUATION_PREFIX]


def write_vocab(vocab, path):
    """Writes a vocabulary as `vocab.txt`: one token per line, "\\n" line ends.

    Args:
        vocab: list of tokens, index = id.
        path: output path (any `tf.io.gfile` path).
    """
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(token + "\n" for token in vocab))
