"""Tests of keras_bert.vocab_learner: learned vocabularies tokenize their training words."""

import pydoc_data.topics
import pytest
import tensorflow as tf

from keras_bert import features
from keras_bert.tokenizer import BertTokenizer, InGraphBertTokenizer
from keras_bert.tokenizer import CONTINUATION_PREFIX
from keras_bert.vocab_learner import VocabSizeError, count_words, learn_wordpiece_vocab, write_vocab


@pytest.fixture(scope="module")
def corpus():
    topics = pydoc_data.topics.topics
    return [topics[k] for k in sorted(topics)[:12]]


def test_learned_vocab_covers_its_training_words(corpus, tmp_path):
    counts = count_words(corpus)
    vocab = learn_wordpiece_vocab(counts, vocab_size=400)
    assert vocab[:5] == list(features.SPECIAL_TOKENS)
    assert len(vocab) == len(set(vocab)) == 400
    assert any(t.startswith("##") for t in vocab)
    path = str(tmp_path / "vocab.txt")
    write_vocab(vocab, path)
    tok = BertTokenizer.from_vocab(path)
    # Every character of the alphabet is a piece, so no training word is [UNK] ...
    assert [w for w in counts if "[UNK]" in tok.tokenize(w)] == []
    # ... and the most frequent words are whole tokens.
    top = [w for w, _ in counts.most_common(20)]
    assert [w for w in top if tok.tokenize(w) != [w]] == []
    text = " ".join(corpus[0].split()[:50])
    ids = InGraphBertTokenizer(path).tokenize(tf.constant([text])).to_list()[0]
    assert ids == tok.convert_tokens_to_ids(tok.tokenize(text))
    assert tok.unk_id not in ids


def test_words_are_normalized_like_the_tokenizer():
    counts = {"Héllo,": 50, "WORLD": 40, "naïve": 30, "中文": 20}
    vocab = learn_wordpiece_vocab(counts, vocab_size=36)
    assert {"hello", "world", "naive", ",", "中", "文"} <= set(vocab)
    assert "Héllo" not in vocab and "中文" not in vocab
    cased = learn_wordpiece_vocab(list(counts.items()), vocab_size=42, do_lower_case=False)
    assert {"Héllo", "WORLD", "naïve"} <= set(cased)


def test_delivers_the_size_asked_for_or_says_what_the_words_give(corpus):
    counts = count_words(corpus)
    sizes = {}
    for size in (300, 800):
        vocab = learn_wordpiece_vocab(counts, vocab_size=size)
        assert len(vocab) == len(set(vocab)) == size
        sizes[size] = vocab
    # Trimming drops the rarest learnt pieces, never a character or its ## form.
    chars = {c for w in counts for c in w}
    for vocab in sizes.values():
        assert chars | {CONTINUATION_PREFIX + c for c in chars} <= set(vocab)
    # The tensorflow-text learner's own search stops at a count of 10 (and at 5%
    # short): far below what these words give.
    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as tft
    words = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))
    assert len(tft.learn(words, 800, list(features.SPECIAL_TOKENS), joiner="##")) < 400

    with pytest.raises(VocabSizeError, match=r"too few distinct words for a vocabulary of "
                       r"50000 tokens: \d+ distinct words give at most (\d+) tokens") as error:
        learn_wordpiece_vocab(counts, vocab_size=50000)
    largest = error.value.vocab
    assert error.value.distinct_words == len(counts)
    assert f"at most {len(largest)} tokens" in str(error.value)
    assert len(sizes[800]) < len(largest) < 50000 and largest[:5] == list(features.SPECIAL_TOKENS)
    assert learn_wordpiece_vocab(counts, vocab_size=len(largest)) == largest
    with pytest.raises(VocabSizeError, match="too small for the words' alphabet"):
        learn_wordpiece_vocab(counts, vocab_size=2 * len(chars))


def test_bad_arguments():
    with pytest.raises(ValueError, match="no room"):
        learn_wordpiece_vocab({"a": 1}, vocab_size=5)
    with pytest.raises(ValueError, match="negative count"):
        learn_wordpiece_vocab({"a": -1}, vocab_size=50)
