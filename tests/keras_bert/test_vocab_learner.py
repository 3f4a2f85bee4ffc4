"""Tests of keras_bert.vocab_learner: learned vocabularies tokenize their training words."""

import pydoc_data.topics
import pytest
import tensorflow as tf

from keras_bert import features
from keras_bert.tokenizer import BertTokenizer, InGraphBertTokenizer
from keras_bert.vocab_learner import count_words, learn_wordpiece_vocab, write_vocab


@pytest.fixture(scope="module")
def corpus():
    topics = pydoc_data.topics.topics
    return [topics[k] for k in sorted(topics)[:12]]


def test_learned_vocab_covers_its_training_words(corpus, tmp_path):
    counts = count_words(corpus)
    vocab = learn_wordpiece_vocab(counts, vocab_size=400, lower_thresh=2)
    assert vocab[:5] == list(features.SPECIAL_TOKENS)
    assert len(vocab) == len(set(vocab)) and 0.9 * 400 <= len(vocab) <= 400
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
    vocab = learn_wordpiece_vocab(counts, vocab_size=60)
    assert {"hello", "world", "naive", ",", "中", "文"} <= set(vocab)
    assert "Héllo" not in vocab and "中文" not in vocab
    cased = learn_wordpiece_vocab(list(counts.items()), vocab_size=60, do_lower_case=False)
    assert {"Héllo", "WORLD", "naïve"} <= set(cased)


def test_bad_arguments():
    with pytest.raises(ValueError, match="no room"):
        learn_wordpiece_vocab({"a": 1}, vocab_size=5)
    with pytest.raises(ValueError, match="negative count"):
        learn_wordpiece_vocab({"a": -1}, vocab_size=50)
