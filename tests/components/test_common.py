"""components.common: the one sentence splitter of ExampleGen, the default data and Evaluate."""

from components import common


def test_split_sentences_at_sentence_ends():
    assert common.split_sentences('He said "stop." Then left! Ok? Yes (really.) Done') == [
        'He said "stop."', "Then left!", "Ok?", "Yes (really.)", "Done"]
    assert common.split_sentences("para one\npara two") == ["para one", "para two"]
    # Docstring-style lists start new sentences.
    assert common.split_sentences("Options. - verbose: talk. * quiet") == [
        "Options.", "- verbose: talk.", "* quiet"]


def test_split_sentences_keeps_abbreviations_and_lowercase_continuations():
    text = "Use a list, e.g. Python lists, i.e. Mutable ones. Compare (cf. RFC 1). Etc. and so on."
    assert common.split_sentences(text) == [
        "Use a list, e.g. Python lists, i.e. Mutable ones.", "Compare (cf. RFC 1).",
        "Etc. and so on."]
    assert common.split_sentences("Ok? yes. 3.5 is a number. {a.} b") == [
        "Ok? yes.", "3.5 is a number.", "{a.} b"]


def test_split_sentences_cuts_long_sentences_at_spaces():
    assert common.split_sentences("aaaa bbbb cccc", 9) == ["aaaa bbbb", "cccc"]
    assert common.split_sentences("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert common.split_sentences("  \n \n") == []
