"""Tests for the model-free metrics, the registry and the statistics."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import types

import pytest

from promptlab.models import FieldSpec
from promptlab.scorers import (
    MetricError, Score, ScoreInput, ScoringError, UnknownMetricError, bootstrap_ci, get_metric,
    list_metrics, mcnemar, paired_bootstrap, register_metric,
)

ANSWER = (FieldSpec(name="answer"),)


def item(predicted="", expected=None, *, output=None, outputs=ANSWER, parse_error=None, parsed=..., field="answer"):
    """A ScoreInput whose parsed output is {field: predicted} (or `parsed` if given)."""
    if parsed is ...:
        parsed = None if parse_error else {field: predicted}
    if output is None:
        output = predicted if isinstance(predicted, str) else json.dumps(predicted)
    exp = {} if expected is None else {field: expected}
    return ScoreInput(output=output, parsed=parsed, parse_error=parse_error, expected=exp, inputs={},
                      outputs=outputs)


def score(spec, it) -> Score:
    return asyncio.run(get_metric(spec).score(it))


def score_all(spec, items):
    metric = get_metric(spec)
    scores = [asyncio.run(metric.score(it)) for it in items]
    return scores, metric.summarize(scores)


# --------------------------------------------------------------------------- registry

def test_list_metrics_includes_builtins_and_lazy_entries_without_importing():
    names = list_metrics()
    for name in ["exact_match", "contains", "regex", "fuzzy", "token_f1", "json_valid", "json_field_match",
                 "json_schema", "numeric", "classification", "accuracy", "length", "field_f1",
                 "python_tests", "judge", "embedding_similarity"]:
        assert name in names
    assert names == sorted(names)
    before = set(sys.modules)
    list_metrics()
    assert set(sys.modules) == before


def test_get_metric_by_name_and_dict_and_spec():
    m = get_metric("exact_match")
    assert m.name == "exact_match" and m.spec == {"name": "exact_match"}
    m = get_metric({"name": "fuzzy", "threshold": 0.9})
    assert m.name == "fuzzy" and m.spec == {"name": "fuzzy", "threshold": 0.9}
    assert callable(m.score) and callable(m.summarize)
    acc = get_metric("accuracy")
    assert acc.name == "accuracy"
    # the spec rebuilds an equal metric
    again = get_metric(m.spec)
    assert again.spec == m.spec


def test_unknown_metric_message_lists_known():
    with pytest.raises(UnknownMetricError) as exc:
        get_metric("foo")
    msg = str(exc.value)
    assert msg.startswith("unknown metric 'foo': known metrics are ")
    assert "exact_match" in msg and "judge" in msg
    assert isinstance(exc.value, MetricError)


@pytest.mark.parametrize("spec, words", [
    ({"name": "fuzzy", "thresh": 0.5}, ["fuzzy", "thresh"]),
    ({"name": "fuzzy", "threshold": "high"}, ["fuzzy", "threshold", "number"]),
    ({"name": "regex"}, ["regex", "pattern"]),
    ({"name": "regex", "pattern": "(unclosed"}, ["regex", "pattern", "regular expression"]),
    ({"name": "regex", "pattern": "a", "mode": "sideways"}, ["regex", "mode"]),
    ({"name": "json_schema", "schema_file": "/nonexistent/schema.json"}, ["json_schema", "schema_file"]),
    ({"name": "json_schema"}, ["json_schema", "schema"]),
    ({"name": "json_schema", "schema": {"type": "nope"}}, ["json_schema", "schema"]),
    ({"name": "length"}, ["length", "min_chars"]),
    ({"name": "length", "min_words": 5, "max_words": 2}, ["length", "min_words"]),
    ({"name": "numeric", "abs_tol": -1}, ["numeric", "abs_tol"]),
    ({"name": "json_field_match", "fields": []}, ["json_field_match", "fields"]),
    ({"threshold": 1}, ["name"]),
])
def test_bad_args_raise_metric_error(spec, words):
    with pytest.raises(MetricError) as exc:
        get_metric(spec)
    msg = str(exc.value)
    for word in words:
        assert word in msg
    assert "\n" not in msg


@pytest.fixture(autouse=True)
def _restore_registry(monkeypatch):
    from promptlab.scorers import registry
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_lazy_entry_that_cannot_be_imported_is_a_metric_error():
    register_metric("nowhere_metric", "promptlab.scorers.does_not_exist:thing")
    with pytest.raises(MetricError, match="nowhere_metric"):
        get_metric("nowhere_metric")


def test_register_metric_callable_and_lazy_string(tmp_path, monkeypatch):
    from promptlab.scorers.registry import BaseMetric

    def always(field: str | None = None, value: float = 1.0):
        return BaseMetric("always", lambda it: Score(value, value >= 0.5))

    register_metric("always", always)
    m = get_metric({"name": "always", "value": 0.25})
    assert m.spec == {"name": "always", "value": 0.25}
    s = asyncio.run(m.score(item("x", "y")))
    assert s.value == 0.25 and not s.passed

    mod = types.ModuleType("fake_lazy_metrics")
    imported = []
    mod.factory = lambda: imported.append(1) or BaseMetric("lazy", lambda it: Score(1.0, True))
    monkeypatch.setitem(sys.modules, "fake_lazy_metrics", mod)
    register_metric("lazy_one", "fake_lazy_metrics:factory")
    assert "lazy_one" in list_metrics() and not imported
    assert asyncio.run(get_metric("lazy_one").score(item("a"))).passed
    assert imported == [1]


def test_custom_module_function_metric(monkeypatch):
    mod = types.ModuleType("my_custom_metrics")

    def starts_with(it, prefix="A"):
        return it.output.startswith(prefix)

    async def half(it):
        return 0.5

    def boom(it):
        raise RuntimeError("bad")

    mod.starts_with, mod.half, mod.boom = starts_with, half, boom
    monkeypatch.setitem(sys.modules, "my_custom_metrics", mod)
    assert score({"name": "my_custom_metrics:starts_with", "prefix": "B"}, item("Bob")).passed
    assert not score("my_custom_metrics:starts_with", item("Bob")).passed
    s = score({"name": "my_custom_metrics:half", "threshold": 0.6}, item("x"))
    assert s.value == 0.5 and not s.passed
    # a custom metric that raises makes the item an error (the runner records it), not a silent None
    with pytest.raises(ScoringError, match="bad"):
        score("my_custom_metrics:boom", item("x"))
    with pytest.raises(MetricError):
        get_metric("my_custom_metrics:missing")


# --------------------------------------------------------------------------- exact_match

def test_exact_match_normalisation_defaults():
    assert score("exact_match", item("  Paris. ", "paris")).passed
    assert score("exact_match", item("New   York", "new york")).passed
    assert not score("exact_match", item("London", "Paris")).passed
    assert score("exact_match", item("London", "Paris")).value == 0.0
    # punctuation inside words / numbers is kept
    assert not score("exact_match", item("3.5", "35")).passed
    assert score("exact_match", item("don't!", "don't")).passed


def test_exact_match_options_turn_normalisation_off():
    assert not score({"name": "exact_match", "case_sensitive": True}, item("Paris", "paris")).passed
    assert not score({"name": "exact_match", "strip_punctuation": False}, item("Paris.", "Paris")).passed
    assert not score({"name": "exact_match", "collapse_whitespace": False}, item("a  b", "a b")).passed
    assert score({"name": "exact_match", "case_sensitive": True}, item("Paris", "Paris")).passed


def test_exact_match_non_strings_and_alternatives():
    assert score("exact_match", item(42, 42.0)).passed
    assert score("exact_match", item("42", 42)).passed
    assert score("exact_match", item(True, "true")).passed
    assert score("exact_match", item("colour", ["color", "colour"])).passed
    assert not score("exact_match", item("hue", ["color", "colour"])).passed


def test_parse_failure_is_a_scored_failure():
    for spec in ["exact_match", "numeric", "classification", {"name": "json_field_match"},
                 {"name": "json_schema", "schema": {"type": "object"}}, "field_f1"]:
        it = item(None, "3", parse_error="no JSON found", outputs=(FieldSpec(name="a"), FieldSpec(name="b")),
                  field="a")
        s = score(spec, it)
        assert s.value == 0.0 and s.passed is False, spec
        assert s.detail["parse_error"] == "no JSON found", spec


def test_missing_expected_is_unscored_and_missing_field_is_wrong():
    s = score("exact_match", item("x", None))
    assert s.value is None and "expected" in s.detail["error"]
    s = score("exact_match", item("x", "x", parsed={"other": "x"}))
    assert s.value == 0.0 and "answer" in s.detail["reason"]


def test_field_resolution():
    two = (FieldSpec(name="label"), FieldSpec(name="reason"))
    it = ScoreInput("", {"label": "a", "reason": "r"}, None, {"label": "a", "reason": "zzz"}, {}, two)
    assert score("exact_match", it).passed                        # first output field
    assert not score({"name": "exact_match", "field": "reason"}, it).passed
    # no signature: the only expected key
    it = ScoreInput("", {"y": "ok"}, None, {"y": "ok"}, {}, ())
    assert score("exact_match", it).passed
    # nothing to go on: unscored with a clear error
    it = ScoreInput("", {"y": "ok"}, None, {"y": "ok", "z": 1}, {}, ())
    s = score("exact_match", it)
    assert s.value is None and "field" in s.detail["error"]


# --------------------------------------------------------------------------- text metrics

def test_contains():
    assert score("contains", item("The capital is Paris.", "paris")).passed
    assert not score("contains", item("The capital is Lyon.", "paris")).passed
    assert not score({"name": "contains", "case_sensitive": True}, item("paris", "Paris")).passed
    assert score({"name": "contains", "value": "sorry"}, item("I am SORRY", None)).passed
    assert score("contains", item("it is blue", ["red", "blue"])).passed


def test_contains_uses_raw_output_when_single_string_field_failed_to_parse():
    it = item(None, "paris", output="Answer: Paris", parse_error="bad format")
    assert score("contains", it).passed
    two = (FieldSpec(name="answer"), FieldSpec(name="why"))
    it = item(None, "paris", output="Answer: Paris", parse_error="bad format", outputs=two)
    s = score("contains", it)
    assert not s.passed and s.detail["parse_error"] == "bad format"


def test_regex_search_and_fullmatch():
    assert score({"name": "regex", "pattern": r"\d{3}"}, item("code 123 ok")).passed
    assert not score({"name": "regex", "pattern": r"\d{3}", "mode": "fullmatch"}, item("code 123 ok")).passed
    assert score({"name": "regex", "pattern": r"\d{3}", "mode": "fullmatch"}, item(" 123\n")).passed
    assert score({"name": "regex", "pattern": "yes", "ignore_case": True}, item("YES")).passed
    s = score({"name": "regex", "pattern": "no"}, item("yes"))
    assert s.value == 0.0 and not s.passed


def test_regex_without_any_signature_uses_raw_output():
    it = ScoreInput("hello world", None, None, {}, {}, ())
    assert score({"name": "regex", "pattern": "world"}, it).passed


def test_fuzzy():
    s = score("fuzzy", item("kitten", "sitting"))
    assert s.value == pytest.approx(1 - 3 / 7)
    assert not s.passed
    s = score("fuzzy", item("Hello  World", "hello world"))
    assert s.value == 1.0 and s.passed
    s = score({"name": "fuzzy", "threshold": 0.5}, item("kitten", "sitting"))
    assert s.passed


def test_token_f1():
    s = score("token_f1", item("the cat sat", "a cat sat down"))
    # tokens: [cat, sat] vs [cat, sat, down] -> P=1, R=2/3, F1=0.8
    assert s.value == pytest.approx(0.8) and s.passed
    s = score("token_f1", item("dog", "cat"))
    assert s.value == 0.0 and not s.passed
    assert score("token_f1", item("The Cat!", "cat")).value == 1.0
    assert not score({"name": "token_f1", "threshold": 0.9}, item("the cat sat", "a cat sat down")).passed


def test_length():
    spec = {"name": "length", "min_words": 2, "max_chars": 12}
    assert score(spec, item("two words")).passed
    s = score(spec, item("one"))
    assert not s.passed and "words" in s.detail["reason"]
    s = score(spec, item("far too many characters"))
    assert not s.passed and "chars" in s.detail["reason"]
    assert s.detail["chars"] == 23


# --------------------------------------------------------------------------- JSON metrics

RESULT = (FieldSpec(name="result", type="json"),)
NAME_AGE = (FieldSpec(name="name"), FieldSpec(name="age", type="int"))


def test_json_valid():
    assert score("json_valid", item({"a": 1}, output='{"a": 1}')).passed
    assert score("json_valid", item(None, output='```json\n{"a": 1}\n```', parse_error="x")).passed
    s = score("json_valid", item(None, output="{a: 1}", parse_error="x"))
    assert s.value == 0.0 and "JSON" in s.detail["reason"]


def test_json_field_match_fraction():
    it = ScoreInput('{"name": "Ann", "age": 30}', {"name": "ann", "age": 31}, None,
                    {"name": "Ann", "age": 30}, {}, NAME_AGE)
    s = score("json_field_match", it)
    assert s.value == 0.5 and not s.passed
    assert s.detail["matched"] == ["name"] and "age" in s.detail["mismatched"]
    s = score({"name": "json_field_match", "fields": ["name"]}, it)
    assert s.value == 1.0 and s.passed
    s = score({"name": "json_field_match", "threshold": 0.5}, it)
    assert s.passed


def test_json_field_match_single_json_field_and_nested_paths():
    pred = {"person": {"name": "Bo", "city": "Oslo"}, "n": 2}
    exp = {"person": {"name": "Bo", "city": "Rome"}, "n": 2}
    it = ScoreInput(json.dumps(pred), {"result": pred}, None, {"result": exp}, {}, RESULT)
    s = score({"name": "json_field_match", "fields": ["person.name", "person.city", "n"]}, it)
    assert s.value == pytest.approx(2 / 3)
    # a JSON string value is decoded
    it = ScoreInput("", {"result": json.dumps(pred)}, None, {"result": exp}, {}, RESULT)
    assert score({"name": "json_field_match", "fields": ["n"]}, it).passed
    # not an object
    it = ScoreInput("", {"result": [1, 2]}, None, {"result": exp}, {}, RESULT)
    assert score("json_field_match", it).value == 0.0


def test_json_schema_inline_and_file(tmp_path):
    schema = {"type": "object", "required": ["name", "age"],
              "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    good = ScoreInput("", {"name": "Ann", "age": 3}, None, {}, {}, NAME_AGE)
    bad = ScoreInput("", {"name": "Ann", "age": "three"}, None, {}, {}, NAME_AGE)
    assert score({"name": "json_schema", "schema": schema}, good).passed
    s = score({"name": "json_schema", "schema": schema}, bad)
    assert s.value == 0.0 and "age" in s.detail["reason"]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    m = get_metric({"name": "json_schema", "schema_file": str(path)})
    assert asyncio.run(m.score(good)).passed
    assert m.spec == {"name": "json_schema", "schema_file": str(path)}
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(MetricError, match="schema_file"):
        get_metric({"name": "json_schema", "schema_file": str(broken)})
    # no signature: the raw output is the JSON
    raw = ScoreInput('```json\n{"name": "Ann", "age": 3}\n```', None, None, {}, {}, ())
    assert score({"name": "json_schema", "schema": schema}, raw).passed


def test_field_f1_per_result_and_per_field():
    exp = {"name": "Ann", "age": 30, "city": "Oslo"}
    items = [
        ScoreInput("", {"name": "Ann", "age": 30, "city": "Oslo"}, None, exp, {}, ()),      # all right
        ScoreInput("", {"name": "Ann", "age": 31, "zip": "123"}, None, exp, {}, ()),        # 1 of 3
        ScoreInput("", None, "bad", exp, {}, ()),                                            # parse failure
    ]
    scores, summary = score_all("field_f1", items)
    assert [s.value for s in scores] == [1.0, pytest.approx(1 / 3), 0.0]
    assert scores[1].detail["fields"] == {"name": "tp", "age": "wrong", "city": "fn", "zip": "fp"}
    assert scores[2].detail["parse_error"] == "bad"
    pf = summary["per_field"]
    # name: tp=2 fp=0 fn=1 -> P=1, R=2/3
    assert pf["name"]["precision"] == 1.0 and pf["name"]["recall"] == pytest.approx(2 / 3)
    # age: tp=1, fp=1 (wrong), fn=2 (wrong + parse failure) -> P=1/2, R=1/3, F1=0.4
    assert pf["age"]["precision"] == 0.5 and pf["age"]["recall"] == pytest.approx(1 / 3)
    assert pf["age"]["f1"] == pytest.approx(0.4)
    assert pf["zip"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert summary["n"] == 3 and summary["mean"] == pytest.approx((1 + 1 / 3) / 3)
    assert 0 <= summary["micro_f1"] <= 1


# --------------------------------------------------------------------------- numeric

def test_numeric_extraction_and_tolerances():
    assert score("numeric", item("The answer is 1,234.5.", 1234.5)).passed
    assert score("numeric", item("first 3 then 7", "7")).passed
    assert score({"name": "numeric", "pick": "first"}, item("first 3 then 7", 3)).passed
    assert score("numeric", item(-2, -2.0)).passed
    assert not score("numeric", item("10.5", 10)).passed
    assert score({"name": "numeric", "abs_tol": 0.5}, item("10.5", 10)).passed
    assert score({"name": "numeric", "rel_tol": 0.1}, item("105", 100)).passed
    assert not score({"name": "numeric", "rel_tol": 0.01}, item("105", 100)).passed
    s = score("numeric", item("no idea", 3))
    assert s.value == 0.0 and "no number" in s.detail["reason"]
    s = score("numeric", item("3", "three"))
    assert s.value is None


def test_numeric_summary_mae_mse_rmse():
    items = [item("10", 10), item("12", 10), item("7", 10), item("n/a", 10), item("1", None)]
    scores, summary = score_all("numeric", items)
    # abs errors 0, 2, 3 -> MAE 5/3, MSE 13/3
    assert summary["n_numeric"] == 3
    assert summary["mae"] == pytest.approx(5 / 3)
    assert summary["mse"] == pytest.approx(13 / 3)
    assert summary["rmse"] == pytest.approx(math.sqrt(13 / 3))
    assert summary["n"] == 4 and summary["errors"] == 1
    assert summary["pass_rate"] == 0.25 and summary["mean"] == 0.25


# --------------------------------------------------------------------------- classification

SENTIMENT = (FieldSpec(name="label", type="enum", choices=("pos", "neg", "neutral")),)


def label_item(predicted, expected, parse_error=None):
    return item(predicted, expected, outputs=SENTIMENT, field="label", parse_error=parse_error)


def test_classification_scoring_and_canonical_labels():
    s = score("classification", label_item("Pos.", "pos"))
    assert s.passed and s.detail["predicted"] == "pos"
    assert not score("classification", label_item("neg", "pos")).passed
    assert not score({"name": "classification", "case_sensitive": True}, label_item("POS", "pos")).passed


def test_classification_summary_hand_computed():
    pairs = [("pos", "pos"), ("pos", "pos"), ("pos", "neg"), ("neg", "neg"), ("neg", "pos"),
             ("neg", "maybe"), ("pos", None)]   # (expected, predicted); None = parse failure
    items = [label_item(p, e, parse_error="bad" if p is None else None) for e, p in pairs]
    scores, summary = score_all("accuracy", items)
    assert summary["accuracy"] == pytest.approx(3 / 7)
    assert summary["mean"] == pytest.approx(3 / 7) and summary["pass_rate"] == pytest.approx(3 / 7)
    assert summary["labels"] == ["pos", "neg", "neutral", "(other)"]
    assert summary["confusion"] == [
        [2, 1, 0, 1],   # expected pos: 2 pos, 1 neg, 1 parse failure
        [1, 1, 0, 1],   # expected neg: 1 pos, 1 neg, 1 "maybe"
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
    pl = summary["per_label"]
    # pos: tp=2, predicted=3, support=4 -> P=2/3 R=1/2 F1=4/7
    assert pl["pos"]["precision"] == pytest.approx(2 / 3)
    assert pl["pos"]["recall"] == pytest.approx(0.5)
    assert pl["pos"]["f1"] == pytest.approx(4 / 7)
    assert pl["pos"]["support"] == 4
    # neg: tp=1, predicted=2, support=3 -> P=1/2 R=1/3 F1=0.4
    assert pl["neg"]["precision"] == pytest.approx(0.5)
    assert pl["neg"]["recall"] == pytest.approx(1 / 3)
    assert pl["neg"]["f1"] == pytest.approx(0.4)
    assert pl["neutral"]["support"] == 0
    assert "(other)" not in pl
    assert summary["macro_f1"] == pytest.approx((4 / 7 + 0.4) / 2)   # neutral never occurs


def test_classification_without_choices_uses_seen_labels():
    items = [item("cat", "cat"), item("dog", "cat"), item("dog", "dog")]
    _, summary = score_all({"name": "classification", "field": "answer"}, items)
    assert summary["labels"] == ["cat", "dog"]
    assert summary["confusion"] == [[1, 1], [0, 1]]
    assert summary["accuracy"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- summaries and stats

def test_every_summary_has_the_common_keys():
    specs = ["exact_match", "contains", {"name": "regex", "pattern": "a"}, "fuzzy", "token_f1", "json_valid",
             "numeric", "classification", {"name": "length", "max_chars": 3}]
    for spec in specs:
        scores, summary = score_all(spec, [item("a", "a"), item("b", "a"), item("1", None)])
        for key in ["n", "errors", "mean", "ci_low", "ci_high", "pass_rate"]:
            assert key in summary, (spec, key)
        if summary["n"]:
            assert summary["ci_low"] <= summary["mean"] <= summary["ci_high"]


def test_summary_of_nothing_and_of_one():
    m = get_metric("exact_match")
    s = m.summarize([])
    assert s["n"] == 0 and s["mean"] is None and s["pass_rate"] is None
    s = m.summarize([Score(1.0, True)])
    assert s["mean"] == s["ci_low"] == s["ci_high"] == 1.0
    s = m.summarize([Score(None, False, {"error": "x"}), Score(0.0, False)])
    assert s["n"] == 1 and s["errors"] == 1 and s["pass_rate"] == 0.0


def test_bootstrap_ci_contains_mean_and_is_reproducible():
    values = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1] * 3
    low, high = bootstrap_ci(values)
    mean = sum(values) / len(values)
    assert low < mean < high
    assert (low, high) == bootstrap_ci(values)
    wide = bootstrap_ci(values, confidence=0.99)
    assert wide[0] <= low and wide[1] >= high
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_paired_bootstrap():
    a = [0.1, 0.2, 0.3, 0.25, 0.15, 0.2, 0.3, 0.1, 0.2, 0.25] * 3
    b = [x + 0.5 for x in a]
    r = paired_bootstrap(a, b)
    assert r["delta"] == pytest.approx(0.5)
    assert r["p_value"] < 0.01
    assert r["ci_low"] <= 0.5 <= r["ci_high"]
    same = paired_bootstrap(a, a)
    assert same["delta"] == 0 and same["p_value"] == 1.0
    noisy = [x + d for x, d in zip(a, [0.01, -0.01] * 15)]
    assert paired_bootstrap(a, noisy)["p_value"] > 0.5
    assert paired_bootstrap(a, b) == r   # reproducible
    worse = paired_bootstrap(b, a)
    assert worse["delta"] == pytest.approx(-0.5) and worse["ci_high"] < 0
    with pytest.raises(ValueError):
        paired_bootstrap([1, 2], [1])


def test_mcnemar_exact_and_chi_square():
    # 1 fixed, 6 regressed, 3 agreeing: exact test, p = 2 * P(X <= 1), X ~ Bin(7, .5) = 2 * 8/128
    a = [False] + [True] * 6 + [True, False, True]
    b = [True] + [False] * 6 + [True, False, True]
    r = mcnemar(a, b)
    assert (r["b01"], r["b10"]) == (1, 6)
    assert r["p_value"] == pytest.approx(16 / 128)
    assert mcnemar(a, a)["p_value"] == 1.0
    # 30 discordant pairs (25 vs 5): chi-square with continuity correction
    a = [False] * 25 + [True] * 5
    b = [True] * 25 + [False] * 5
    r = mcnemar(a, b)
    assert r["statistic"] == pytest.approx((20 - 1) ** 2 / 30)
    assert r["p_value"] == pytest.approx(math.erfc(math.sqrt(r["statistic"] / 2)))
    assert r["p_value"] < 0.001
    balanced = mcnemar([True, False] * 15, [False, True] * 15)
    assert balanced["p_value"] > 0.8
