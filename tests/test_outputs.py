"""Replies parsed and validated against the signature; rendering of prompts with demos."""

import pytest

from promptlab.models import Demo, PromptContent, Signature
from promptlab.prompting.outputs import parse_output
from promptlab.prompting.render import render_messages

ENUM = Signature(name="s", inputs=["text"],
                 outputs=[{"name": "label", "type": "enum", "choices": ["positive", "negative"]}])
MULTI = Signature(name="m", inputs=["text"], outputs=[
    {"name": "answer", "type": "string"}, {"name": "confidence", "type": "float"},
    {"name": "tags", "type": "list"}, {"name": "ok", "type": "bool"}])


@pytest.mark.parametrize("reply,label", [
    ("positive", "positive"), (" Negative.", "negative"), ('"positive"', "positive"),
    ("The review is negative\nbecause", "negative"), ('{"label": "positive"}', "positive"),
])
def test_enum_replies(reply, label):
    assert parse_output(reply, ENUM) == ({"label": label}, None)


def test_enum_reply_outside_choices_is_a_parse_error():
    parsed, error = parse_output("I am not sure", ENUM)
    assert parsed is None and "not one of positive, negative" in error


def test_multi_field_json_and_key_value_lines():
    reply = '```json\n{"answer": "Paris", "confidence": "0.9", "tags": ["geo"], "ok": "yes"}\n```'
    assert parse_output(reply, MULTI) == ({"answer": "Paris", "confidence": 0.9, "tags": ["geo"], "ok": True}, None)
    lines = "Answer: Paris\nConfidence: 0.75\nTags: geo, capital\nOk: false"
    assert parse_output(lines, MULTI) == ({"answer": "Paris", "confidence": 0.75,
                                           "tags": ["geo", "capital"], "ok": False}, None)


def test_missing_field_and_bad_number_are_parse_errors():
    assert parse_output('{"answer": "x"}', MULTI)[1] == "reply lacks output field 'confidence'"
    error = parse_output('{"answer": "x", "confidence": "high", "tags": [], "ok": true}', MULTI)[1]
    assert "confidence" in error and "no number" in error


def test_int_field():
    sig = Signature(name="n", inputs=["q"], outputs=[{"name": "n", "type": "int"}])
    assert parse_output("The answer is 1,234.", sig) == ({"n": 1234}, None)
    assert parse_output("2.5", sig)[0] is None


def test_render_puts_instruction_system_demos_then_the_case():
    content = PromptContent(system="One word.", template="Review: {{ text }}\nSentiment:",
                            demos=[Demo(inputs={"text": "good"}, outputs={"label": "positive"})])
    sig = ENUM.model_copy(update={"instruction": "Classify."})
    assert render_messages(content, sig, {"text": "bad"}) == [
        {"role": "system", "content": "Classify.\nOne word."},
        {"role": "user", "content": "Review: good\nSentiment:"},
        {"role": "assistant", "content": "positive"},
        {"role": "user", "content": "Review: bad\nSentiment:"},
    ]
