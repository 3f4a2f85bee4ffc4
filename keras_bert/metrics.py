"""Evaluation metrics of fine-tuning tasks, as plain functions over Python/numpy values.

Each function reproduces the reference definition its task is reported with:

- classification: accuracy; F1 (binary and macro) and Matthews correlation as
  scikit-learn computes them (`f1_score`, `matthews_corrcoef`), the GLUE metrics;
- regression: Pearson and Spearman correlation as scipy (`pearsonr`, `spearmanr`,
  ties get average ranks), the STS-B metrics;
- entities: precision/recall/F1 over exact spans, spans extracted exactly as
  seqeval's default mode (= the CoNLL `conlleval` script) does, so BIO and IOB1 tag
  sequences both work;
- SQuAD: exact match and F1 with the official answer normalisation, the v1.1 script
  (`evaluate-v1.1.py`) and the v2.0 script (`evaluate-v2.0.py`) including its
  HasAns/NoAns breakdown and best no-answer threshold search.

Undefined values follow the references: a correlation of a constant series is NaN
(scipy), F1 of a class never predicted nor present is 0.0 and MCC with a zero
denominator is 0.0 (scikit-learn), precision/recall/F1 without predicted or gold
entities are 0.0 (seqeval). Metrics of zero examples are NaN.

Example:
    >>> accuracy([0, 1, 1], [0, 1, 0])
    0.6666666666666666
    >>> entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])["f1"]
    1.0
    >>> squad_v1_scores({"q1": ["the cat"]}, {"q1": "Cat"})
    {'exact_match': 100.0, 'f1': 100.0, 'total': 1}
"""

import collections
import math
import re
import string

import numpy as np


class MetricInputError(ValueError):
    """Predictions and references do not fit together (lengths, ids, types)."""


def _pair(labels, predictions, what="labels"):
    labels = list(labels)
    predictions = list(predictions)
    if len(labels) != len(predictions):
        raise MetricInputError(
            f"{what} has {len(labels)} entries but predictions has {len(predictions)}")
    return labels, predictions


# --------------------------------------------------------------------------------------
# Classification.


def accuracy(labels, predictions):
    """Share of predictions equal to their label.

    Args:
        labels: gold labels (any hashable values).
        predictions: predicted labels, same length.

    Returns:
        A float in [0, 1]; NaN for no examples.
    """
    labels, predictions = _pair(labels, predictions)
    if not labels:
        return math.nan
    return sum(1 for a, b in zip(labels, predictions) if a == b) / len(labels)


def _class_counts(labels, predictions, cls):
    tp = sum(1 for a, b in zip(labels, predictions) if a == cls and b == cls)
    fp = sum(1 for a, b in zip(labels, predictions) if a != cls and b == cls)
    fn = sum(1 for a, b in zip(labels, predictions) if a == cls and b != cls)
    return tp, fp, fn


def _f1_from_counts(tp, fp, fn):
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def f1_binary(labels, predictions, pos_label=1):
    """F1 of the positive class (scikit-learn `f1_score(average="binary")`).

    Args:
        labels: gold labels.
        predictions: predicted labels, same length.
        pos_label: the positive class. Defaults to 1.

    Returns:
        `2 TP / (2 TP + FP + FN)`; 0.0 when the positive class is neither present
        nor predicted (scikit-learn's `zero_division` default); NaN for no examples.
    """
    labels, predictions = _pair(labels, predictions)
    if not labels:
        return math.nan
    return _f1_from_counts(*_class_counts(labels, predictions, pos_label))


def f1_per_class(labels, predictions, classes=None):
    """F1 of each class, {class: F1}.

    Args:
        labels: gold labels.
        predictions: predicted labels, same length.
        classes: classes to report. Defaults to the sorted union of both lists.
    """
    labels, predictions = _pair(labels, predictions)
    if classes is None:
        classes = sorted(set(labels) | set(predictions))
    return {cls: _f1_from_counts(*_class_counts(labels, predictions, cls)) for cls in classes}


def f1_macro(labels, predictions, classes=None):
    """Unweighted mean of per-class F1 (scikit-learn `f1_score(average="macro")`).

    Args:
        labels: gold labels.
        predictions: predicted labels, same length.
        classes: classes to average over; a class absent from both lists counts
            0.0. Defaults to the sorted union of both lists (scikit-learn's default).

    Returns:
        A float in [0, 1]; NaN for no examples.
    """
    labels, predictions = _pair(labels, predictions)
    if not labels:
        return math.nan
    per_class = f1_per_class(labels, predictions, classes)
    return sum(per_class.values()) / len(per_class) if per_class else math.nan


def matthews_corrcoef(labels, predictions):
    """Matthews correlation coefficient, multi-class (scikit-learn's `matthews_corrcoef`).

    Uses the confusion-matrix generalisation (Gorodkin's R_K); for two classes it is
    the usual `(TP TN - FP FN) / sqrt(...)`.

    Args:
        labels: gold labels.
        predictions: predicted labels, same length.

    Returns:
        A float in [-1, 1]; 0.0 when the denominator is zero (a constant prediction
        or constant labels), as scikit-learn; NaN for no examples.
    """
    labels, predictions = _pair(labels, predictions)
    if not labels:
        return math.nan
    classes = sorted(set(labels) | set(predictions), key=repr)
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    for a, b in zip(labels, predictions):
        confusion[index[a], index[b]] += 1
    t_sum = confusion.sum(axis=1)
    p_sum = confusion.sum(axis=0)
    n_correct = np.trace(confusion)
    n = confusion.sum()
    cov_ytyp = n_correct * n - np.dot(t_sum, p_sum)
    cov_ypyp = n * n - np.dot(p_sum, p_sum)
    cov_ytyt = n * n - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def classification_metrics(labels, predictions, classes=None):
    """The GLUE classification metrics in one dict.

    Args:
        labels: gold label ids.
        predictions: predicted label ids.
        classes: all class ids, for macro F1. Defaults to the union of both lists.

    Returns:
        {"accuracy", "f1_macro", "mcc", "num_examples"} and, for two classes
        (0/1), "f1" of class 1.
    """
    labels, predictions = _pair(labels, predictions)
    out = {"accuracy": accuracy(labels, predictions),
           "f1_macro": f1_macro(labels, predictions, classes),
           "mcc": matthews_corrcoef(labels, predictions),
           "num_examples": len(labels)}
    known = set(classes) if classes is not None else set(labels) | set(predictions)
    if known <= {0, 1}:
        out["f1"] = f1_binary(labels, predictions, pos_label=1)
    return out


# --------------------------------------------------------------------------------------
# Regression.


def _correlation(function, x, y):
    x, y = _pair(x, y, "x")
    if len(x) < 2:
        return math.nan
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan  # scipy too, after a ConstantInputWarning
    return float(function(x, y)[0])


def pearson(x, y):
    """Pearson correlation coefficient (`scipy.stats.pearsonr(x, y)[0]`).

    Args:
        x: numbers.
        y: numbers, same length.

    Returns:
        A float in [-1, 1]; NaN if either series is constant or has fewer than 2
        values.
    """
    from scipy import stats

    return _correlation(stats.pearsonr, x, y)


def rankdata(values):
    """Ranks from 1; ties get the average of the ranks they span (`scipy.stats.rankdata`)."""
    from scipy import stats

    return stats.rankdata(np.asarray(values, dtype=np.float64))


def spearman(x, y):
    """Spearman rank correlation (`scipy.stats.spearmanr(x, y)[0]`).

    Args:
        x: numbers.
        y: numbers, same length.

    Returns:
        A float in [-1, 1]; NaN if either series is constant or has fewer than 2
        values.
    """
    from scipy import stats

    return _correlation(stats.spearmanr, x, y)


def regression_metrics(labels, predictions):
    """The STS-B metrics: {"pearson", "spearman", "corr" (their mean), "mse", "num_examples"}."""
    labels, predictions = _pair(labels, predictions)
    p, s = pearson(labels, predictions), spearman(labels, predictions)
    mse = (float(np.mean((np.asarray(labels, float) - np.asarray(predictions, float)) ** 2))
           if labels else math.nan)
    return {"pearson": p, "spearman": s, "corr": (p + s) / 2, "mse": mse,
            "num_examples": len(labels)}


# --------------------------------------------------------------------------------------
# Entities (seqeval default mode = conlleval).


def _split_tag(tag):
    # seqeval: the first character is the position tag, the type follows a "-".
    return tag[:1], (tag[1:].split("-", 1)[-1] or "_")


def _end_of_chunk(prev_tag, tag, prev_type, type_):
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag, tag, prev_type, type_):
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def get_entities(tags):
    """Entity chunks of one tag sequence, as seqeval's `get_entities` (conlleval rules).

    A chunk starts at `B-X`, or at `I-X` after `O` or after a different type (so IOB1,
    where `B-` only separates two adjacent entities of one type, reads the same as
    BIO), and ends where the next one starts or at `O`. `E-`/`S-` (IOBES) are also
    understood.

    Args:
        tags: tag strings such as "O", "B-PER", "I-PER".

    Returns:
        [(type, first index, last index)] with inclusive word indices.

    Example:
        >>> get_entities(["I-PER", "I-PER", "B-PER", "O", "I-LOC"])
        [('PER', 0, 1), ('PER', 2, 2), ('LOC', 4, 4)]
    """
    chunks = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate(list(tags) + ["O"]):
        tag, type_ = _split_tag(chunk)
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _prf(tp, n_pred, n_true):
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_scores(true_tags, pred_tags):
    """Entity-level precision, recall and F1 over exact span matches (seqeval/conlleval).

    An entity counts as correct only if its type, first and last word all match a
    gold entity. Micro averages are the headline numbers (seqeval's `f1_score`
    default, conlleval's "overall"); per-type and macro values are included.

    Args:
        true_tags: gold tag sequences, one list per sentence.
        pred_tags: predicted tag sequences, same shapes.

    Returns:
        {"precision", "recall", "f1", "macro_f1", "num_true", "num_pred",
        "num_correct", "per_type": {type: {"precision", "recall", "f1", "support"}}}.

    Raises:
        MetricInputError: the lists (or a sentence's tags) differ in length.
    """
    true_tags, pred_tags = _pair(true_tags, pred_tags, "true_tags")
    true_set, pred_set = set(), set()
    for i, (gold, pred) in enumerate(zip(true_tags, pred_tags)):
        if len(gold) != len(pred):
            raise MetricInputError(
                f"sentence {i}: {len(gold)} gold tags but {len(pred)} predicted tags")
        true_set.update((i,) + chunk for chunk in get_entities(gold))
        pred_set.update((i,) + chunk for chunk in get_entities(pred))
    correct = true_set & pred_set
    per_type = {}
    for type_ in sorted({e[1] for e in true_set | pred_set}):
        n_true = sum(1 for e in true_set if e[1] == type_)
        n_pred = sum(1 for e in pred_set if e[1] == type_)
        tp = sum(1 for e in correct if e[1] == type_)
        p, r, f = _prf(tp, n_pred, n_true)
        per_type[type_] = {"precision": p, "recall": r, "f1": f, "support": n_true}
    precision, recall, f1 = _prf(len(correct), len(pred_set), len(true_set))
    macro = (sum(v["f1"] for v in per_type.values()) / len(per_type)) if per_type else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "macro_f1": macro,
            "num_true": len(true_set), "num_pred": len(pred_set), "num_correct": len(correct),
            "per_type": per_type}


def token_accuracy(true_tags, pred_tags):
    """Share of words whose predicted tag equals the gold tag (all sentences pooled)."""
    true_tags, pred_tags = _pair(true_tags, pred_tags, "true_tags")
    flat_true = [t for sentence in true_tags for t in sentence]
    flat_pred = [t for sentence in pred_tags for t in sentence]
    return accuracy(flat_true, flat_pred)


# --------------------------------------------------------------------------------------
# SQuAD (official evaluation scripts).

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text):
    """The official SQuAD normalisation: lower-case, drop ASCII punctuation and the
    articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact(gold, prediction):
    """1 if the normalised answers are equal, else 0 (both SQuAD versions)."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def squad_f1(gold, prediction, version=2):
    """Bag-of-words F1 between normalised answers, as the official scripts.

    Args:
        gold: a gold answer text ("" for no answer in v2.0).
        prediction: the predicted text.
        version: 1 (`evaluate-v1.1.py`: no overlap → 0, also for two empty answers)
            or 2 (`evaluate-v2.0.py`: if either side is empty, 1 if both are).
            Defaults to 2.
    """
    gold_tokens = normalize_answer(gold).split() if gold else []
    pred_tokens = normalize_answer(prediction).split() if prediction else []
    common = collections.Counter(gold_tokens) & collections.Counter(pred_tokens)
    num_same = sum(common.values())
    if version == 2 and (not gold_tokens or not pred_tokens):
        return float(gold_tokens == pred_tokens)
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_gold(dataset):
    """{question id: [answer texts]} from a SQuAD JSON (its "data" list or the whole
    object); unanswerable questions get an empty list."""
    if isinstance(dataset, dict):
        dataset = dataset["data"]
    gold = {}
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                gold[qa["id"]] = [a["text"] for a in qa.get("answers", [])]
    return gold


def squad_v1_scores(gold, predictions):
    """`evaluate-v1.1.py`: exact match and F1 (percent), the max over gold answers.

    Args:
        gold: {question id: [gold answer texts]} (see `squad_gold`).
        predictions: {question id: predicted text}; a missing question scores 0
            and still counts in the total, as the official script.

    Returns:
        {"exact_match", "f1", "total", "missing"}.
    """
    exact = f1 = 0.0
    missing = 0
    for qid, answers in gold.items():
        if qid not in predictions:
            missing += 1
            continue
        if not answers:
            raise MetricInputError(f"question {qid!r} has no gold answer; SQuAD v1.1 needs one "
                                   "(use squad_v2_scores for unanswerable questions)")
        prediction = predictions[qid]
        exact += max(squad_exact(a, prediction) for a in answers)
        f1 += max(squad_f1(a, prediction, version=1) for a in answers)
    total = len(gold)
    return {"exact_match": 100.0 * exact / total if total else math.nan,
            "f1": 100.0 * f1 / total if total else math.nan, "total": total, "missing": missing}


def squad_v2_raw_scores(gold, predictions):
    """Per-question exact and F1 of `evaluate-v2.0.py`'s `get_raw_scores`.

    Gold answers that normalise to "" are dropped; a question left without any is
    unanswerable and only "" matches it. Questions without a prediction are left out.

    Returns:
        ({qid: exact}, {qid: f1}).
    """
    exact, f1 = {}, {}
    for qid, answers in gold.items():
        answers = [a for a in answers if normalize_answer(a)] or [""]
        if qid not in predictions:
            continue
        prediction = predictions[qid]
        exact[qid] = max(squad_exact(a, prediction) for a in answers)
        f1[qid] = max(squad_f1(a, prediction, version=2) for a in answers)
    return exact, f1


def apply_no_answer_threshold(scores, na_probs, has_answer, threshold):
    """Scores after predicting "" wherever `na_probs[qid] > threshold` (official script)."""
    return {qid: (float(not has_answer[qid]) if na_probs[qid] > threshold else s)
            for qid, s in scores.items()}


def find_best_threshold(predictions, scores, na_probs, has_answer):
    """The no-answer threshold that maximises the score (`find_best_thresh`).

    Questions are visited by increasing `na_probs`; putting the threshold at a
    question's value answers it and every question before it, predicting "" for the
    rest. Starting from "all unanswered" (the share of unanswerable questions), the
    first best running score wins, so ties keep the lowest threshold; questions with
    equal `na_probs` are visited in the dict's order, as the script (a stable sort).

    Args:
        predictions: {qid: non-null predicted text}.
        scores: {qid: raw exact or F1 score of that text}.
        na_probs: {qid: no-answer score}, higher means more likely unanswerable.
        has_answer: {qid: bool}.

    Returns:
        (best score in percent, threshold).
    """
    score = best = float(sum(1 for qid in has_answer if not has_answer[qid]))
    threshold = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            diff = scores[qid]
        else:
            diff = -1 if predictions[qid] else 0
        score += diff
        if score > best:
            best = score
            threshold = na_probs[qid]
    return (100.0 * best / len(scores) if scores else math.nan), threshold


def _summary(exact, f1, qids):
    total = len(qids)
    if not total:
        return {"exact": math.nan, "f1": math.nan, "total": 0}
    return {"exact": 100.0 * sum(exact[q] for q in qids) / total,
            "f1": 100.0 * sum(f1[q] for q in qids) / total, "total": total}


def squad_v2_scores(gold, predictions, na_probs=None, na_prob_threshold=1.0):
    """`evaluate-v2.0.py`: exact/F1 overall and for HasAns/NoAns questions, and with
    `na_probs`, the best thresholds.

    Args:
        gold: {question id: [gold answer texts]}, [] for unanswerable questions.
        predictions: {question id: predicted text}, "" for no answer. A question
            without a prediction is scored as "" (the official script would fail).
        na_probs: {question id: no-answer score} (probability, or the original
            BERT's null-score difference `null_odds`). Defaults to None.
        na_prob_threshold: predict "" where `na_probs` exceeds this. Defaults to 1.0
            (the script's default).

    Returns:
        {"exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
        "NoAns_exact", "NoAns_f1", "NoAns_total"} (each breakdown only if it has
        questions), plus "best_exact", "best_exact_thresh", "best_f1",
        "best_f1_thresh" with `na_probs`.
    """
    predictions = {qid: predictions.get(qid, "") for qid in gold}
    # As the official script: answerable means "has gold answers", before normalising.
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    probs = dict(na_probs) if na_probs is not None else {qid: 0.0 for qid in predictions}
    missing = [qid for qid in gold if qid not in probs]
    if missing:
        raise MetricInputError(f"na_probs lacks {len(missing)} question(s), e.g. {missing[0]!r}")
    exact_raw, f1_raw = squad_v2_raw_scores(gold, predictions)
    exact = apply_no_answer_threshold(exact_raw, probs, has_answer, na_prob_threshold)
    f1 = apply_no_answer_threshold(f1_raw, probs, has_answer, na_prob_threshold)
    out = _summary(exact, f1, list(gold))
    for name, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, v in has_answer.items() if v == wanted]
        if qids:
            out.update({f"{name}_{k}": v for k, v in _summary(exact, f1, qids).items()})
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = find_best_threshold(
            predictions, exact_raw, probs, has_answer)
        out["best_f1"], out["best_f1_thresh"] = find_best_threshold(
            predictions, f1_raw, probs, has_answer)
    return out


def squad_v2_tune(gold, best_non_null, null_odds):
    """Tunes the null threshold on dev and scores the thresholded predictions.

    As the original BERT recipe: score each question's best non-null answer, find
    the `null_odds` threshold with the best F1 (`find_best_threshold`), then predict
    "" wherever `null_odds > threshold`.

    Args:
        gold: {question id: [gold answer texts]}, [] for unanswerable questions.
        best_non_null: {question id: best non-empty answer text} ("" if none).
        null_odds: {question id: null score minus best non-null score}.

    Returns:
        (threshold, {question id: final prediction}, `squad_v2_scores` of the final
        predictions with the best-threshold search over `null_odds`).
    """
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    preds = {qid: best_non_null.get(qid, "") for qid in gold}
    odds = {qid: null_odds.get(qid, math.inf) for qid in gold}
    _, f1_raw = squad_v2_raw_scores(gold, preds)
    _, threshold = find_best_threshold(preds, f1_raw, odds, has_answer)
    final = {qid: ("" if odds[qid] > threshold else preds[qid]) for qid in gold}
    scores = squad_v2_scores(gold, preds, na_probs=odds, na_prob_threshold=threshold)
    scores["null_score_diff_threshold"] = threshold
    return threshold, final, scores
