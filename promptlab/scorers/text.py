"""Text metrics: exact_match, contains, regex, fuzzy, token_f1, length.

All take ``field=None`` (see `registry.resolve_field`). exact_match compares
the parsed field value with the expected one. The raw-text metrics (contains,
regex, fuzzy, token_f1, length) look at `registry.text_value`: the parsed
field as text, or the raw model output when no field applies or when parsing
failed but the field is the signature's only, plain-string output.

When the expected value is a list and the prediction is not, the list holds
acceptable alternatives: the best-matching one counts.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Any, Callable, Literal

from rapidfuzz.distance import Levenshtein

from promptlab.scorers.base import MetricError, Score, ScoreInput
from promptlab.scorers.registry import (
    BaseMetric, as_text, expected_value, need_field, predicted_value, text_value,
)

# punctuation not between two word characters: "Paris." -> "Paris", but "3.5", "don't" stay
_EDGE_PUNCT = re.compile(r"(?<!\w)[^\w\s]+|[^\w\s]+(?!\w)")
_WS = re.compile(r"\s+")


def normalizer(case_sensitive: bool = False, strip: bool = True, collapse_whitespace: bool = True,
               strip_punctuation: bool = True) -> Callable[[str], str]:
    def norm(text: str) -> str:
        if strip_punctuation:
            text = _EDGE_PUNCT.sub("", text)
        if collapse_whitespace:
            text = _WS.sub(" ", text)
        if strip:
            text = text.strip()
        if not case_sensitive:
            text = text.casefold()
        return text
    return norm


def alternatives(expected: Any, predicted: Any = None) -> list[Any]:
    """A list expected value with a non-list prediction means "any of these"."""
    if isinstance(expected, list) and not isinstance(predicted, list) and expected:
        return expected
    return [expected]


def _numbers_equal(a: Any, b: Any) -> bool | None:
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return None


def exact_match(field: str | None = None, case_sensitive: bool = False, strip: bool = True,
                collapse_whitespace: bool = True, strip_punctuation: bool = True) -> BaseMetric:
    """1 if the parsed value equals the expected one after normalisation, else 0.

    Normalisation (on by default): trim, collapse runs of whitespace, ignore
    case, and drop punctuation that is not inside a word ("Paris." == "paris",
    but "3.5" != "35"). Two numbers compare numerically; other non-strings are
    compared as text (JSON for lists and dicts).
    """
    norm = normalizer(case_sensitive, strip, collapse_whitespace, strip_punctuation)

    def score(item: ScoreInput) -> Score:
        name = need_field(item, field)
        expected = expected_value(item, name)
        predicted = predicted_value(item, name)
        for option in alternatives(expected, predicted):
            same = _numbers_equal(predicted, option)
            if same is None:
                same = norm(as_text(predicted)) == norm(as_text(option))
            if same:
                return Score(1.0, True, {"predicted": predicted, "expected": option})
        return Score(0.0, False, {"predicted": predicted, "expected": expected})

    return BaseMetric("exact_match", score)


def contains(field: str | None = None, value: str | None = None, case_sensitive: bool = False) -> BaseMetric:
    """1 if the output text contains `value` (or else the expected value), else 0."""

    def score(item: ScoreInput) -> Score:
        text = text_value(item, field)
        if value is not None:
            needles = [value]
        else:
            needles = [as_text(v) for v in alternatives(expected_value(item, need_field(item, field)))]
        hay = text if case_sensitive else text.casefold()
        for needle in needles:
            if (needle if case_sensitive else needle.casefold()) in hay:
                return Score(1.0, True, {"found": needle})
        return Score(0.0, False, {"reason": f"{needles[0]!r} not found" if len(needles) == 1
                                  else f"none of {needles!r} found"})

    return BaseMetric("contains", score)


def regex(pattern: str, field: str | None = None, mode: Literal["search", "fullmatch"] = "search",
          ignore_case: bool = False) -> BaseMetric:
    """1 if `pattern` matches the output text (re.search, or re.fullmatch with mode="fullmatch")."""
    try:
        compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise MetricError(f"metric 'regex': argument 'pattern' is not a valid regular expression ({exc})") from None
    match = compiled.fullmatch if mode == "fullmatch" else compiled.search

    def score(item: ScoreInput) -> Score:
        text = text_value(item, field)
        found = match(text.strip() if mode == "fullmatch" else text)
        if found:
            return Score(1.0, True, {"match": found.group(0)})
        return Score(0.0, False, {"reason": f"no {mode} of /{pattern}/"})

    return BaseMetric("regex", score)


def fuzzy(field: str | None = None, threshold: float = 0.8, case_sensitive: bool = False) -> BaseMetric:
    """Normalised Levenshtein similarity (rapidfuzz) of output text and expected, 0..1.

    Both sides are trimmed and whitespace-collapsed (and case-folded unless
    case_sensitive). Passes when similarity >= threshold.
    """
    norm = normalizer(case_sensitive, strip_punctuation=False)

    def score(item: ScoreInput) -> Score:
        expected = expected_value(item, need_field(item, field))
        text = norm(text_value(item, field))
        best = max(Levenshtein.normalized_similarity(text, norm(as_text(option)))
                   for option in alternatives(expected))
        return Score(float(best), best >= threshold, {"similarity": round(float(best), 4)})

    return BaseMetric("fuzzy", score)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def squad_tokens(text: str) -> list[str]:
    """SQuAD answer normalisation: lower case, no punctuation, no articles, split on whitespace."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def token_f1_score(predicted: str, expected: str) -> float:
    pred, gold = squad_tokens(predicted), squad_tokens(expected)
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def token_f1(field: str | None = None, threshold: float = 0.5) -> BaseMetric:
    """SQuAD-style token-overlap F1 between the output text and expected; passes at >= threshold."""

    def score(item: ScoreInput) -> Score:
        expected = expected_value(item, need_field(item, field))
        text = text_value(item, field)
        best = max(token_f1_score(text, as_text(option)) for option in alternatives(expected))
        return Score(best, best >= threshold, {"f1": round(best, 4)})

    return BaseMetric("token_f1", score)


def length(field: str | None = None, min_chars: int | None = None, max_chars: int | None = None,
           min_words: int | None = None, max_words: int | None = None) -> BaseMetric:
    """1 if the output text is within all given bounds (inclusive), else 0."""
    if all(v is None for v in (min_chars, max_chars, min_words, max_words)):
        raise MetricError("metric 'length' needs at least one of min_chars, max_chars, min_words, max_words")
    for low, high, what in ((min_chars, max_chars, "chars"), (min_words, max_words, "words")):
        if low is not None and high is not None and low > high:
            raise MetricError(f"metric 'length': argument 'min_{what}' ({low}) is above 'max_{what}' ({high})")

    def score(item: ScoreInput) -> Score:
        text = text_value(item, field).strip()
        chars, words = len(text), len(text.split())
        problems = []
        if min_chars is not None and chars < min_chars:
            problems.append(f"{chars} chars < {min_chars}")
        if max_chars is not None and chars > max_chars:
            problems.append(f"{chars} chars > {max_chars}")
        if min_words is not None and words < min_words:
            problems.append(f"{words} words < {min_words}")
        if max_words is not None and words > max_words:
            problems.append(f"{words} words > {max_words}")
        detail: dict[str, Any] = {"chars": chars, "words": words}
        if problems:
            detail["reason"] = "; ".join(problems)
        return Score(0.0 if problems else 1.0, not problems, detail)

    return BaseMetric("length", score)


__all__ = ["exact_match", "contains", "regex", "fuzzy", "token_f1", "length", "normalizer",
           "alternatives", "squad_tokens", "token_f1_score"]
