"""Replies parsed and validated against the signature; rendering of prompts with demos."""

import pytest

from promptlab.models import Demo, FieldSpec, PromptContent, Signature
from promptlab.prompting.outputs import parse_output, parse_reply
from promptlab.prompting.render import render_messages

ENUM = Signature(name="s", inputs=["text"],
                 outputs=[{"name": "label", "type": "enum", "choices": ["positive", "negative"]}])
SPAM = Signature(name="s", inputs=["text"], outputs=[{"name": "label", "type": "enum", "choices": ["ham", "spam"]}])
LENIENT = Signature(name="s", inputs=["text"],
                    outputs=[{"name": "label", "type": "enum", "choices": ["ham", "spam"], "lenient": True}])
MULTI = Signature(name="m", inputs=["text"], outputs=[
    {"name": "answer", "type": "string"}, {"name": "confidence", "type": "float"},
    {"name": "tags", "type": "list"}, {"name": "ok", "type": "bool"}])


@pytest.mark.parametrize("reply,label", [
    ("positive", "positive"), (" Negative.", "negative"), ('"positive"', "positive"), ("**Positive**!", "positive"),
    ("negative\nbecause the plot drags", "negative"), ("positive. The acting is great", "positive"),
    ("negative - the plot drags", "negative"), ("positive (mostly)", "positive"), ("Label: negative", "negative"),
    ('{"label": "positive"}', "positive"),
])
def test_an_enum_reply_that_is_the_choice_is_accepted(reply, label):
    assert parse_output(reply, ENUM) == ({"label": label}, None)


@pytest.mark.parametrize("reply,reason", [
    ("Answer (ham or spam): spam", "names more than one choice (ham, spam)"),  # the local model's echo
    ("ham or spam", "names more than one choice (ham, spam)"),
    ("spam, not ham", "names more than one choice (spam, ham)"),
    ("I am not sure", "is not one of ham, spam"),
    ("The message is not spam", "is not one of ham, spam (it mentions 'spam' in other words; "
                                "`lenient: true` on the field accepts that)"),
])
def test_an_enum_reply_naming_two_choices_or_none_is_a_parse_failure(reply, reason):
    parsed, error = parse_output(reply, SPAM)
    assert parsed is None and error == f"field 'label': '{reply}' {reason}"


def test_a_longer_choice_is_not_also_its_shorter_one():
    sig = Signature(name="s", inputs=["t"], outputs=[{"name": "r", "type": "enum",
                                                      "choices": ["spam", "very spam"]}])
    assert parse_output("Very spam.", sig) == ({"r": "very spam"}, None)
    assert "more than one choice" in parse_output("spam or very spam", sig)[1]


def test_lenient_is_an_explicit_field_option_and_says_when_it_was_needed():
    for reply, label in (("The message is not spam", "spam"), ("Answer (ham or spam): spam", "ham")):
        read = parse_reply(reply, LENIENT)
        assert read.values == {"label": label} and read.lenient == ("label",) and read.parse_error is None
    assert parse_reply("spam.", LENIENT).lenient == ()  # strict accepted it: not counted as lenient
    assert parse_reply("I am not sure", LENIENT).parsed is None
    with pytest.raises(ValueError, match="lenient is an option of enum fields"):
        FieldSpec(name="n", type="int", lenient=True)


def test_a_signature_without_the_option_keeps_its_stored_form():
    assert "lenient" not in ENUM.model_dump(mode="json")["outputs"][0]
    assert LENIENT.model_dump(mode="json")["outputs"][0]["lenient"] is True


def test_multi_field_json_and_key_value_lines():
    reply = '```json\n{"answer": "Paris", "confidence": "0.9", "tags": ["geo"], "ok": "yes"}\n```'
    assert parse_output(reply, MULTI) == ({"answer": "Paris", "confidence": 0.9, "tags": ["geo"], "ok": True}, None)
    lines = "Answer: Paris\nConfidence: 0.75\nTags: geo, capital\nOk: false"
    assert parse_output(lines, MULTI) == ({"answer": "Paris", "confidence": 0.75,
                                           "tags": ["geo", "capital"], "ok": False}, None)


def test_fields_are_read_one_by_one_valid_ones_keep_their_values():
    read = parse_reply('{"answer": "x", "confidence": "high", "tags": [], "ok": true}', MULTI)
    assert read.values == {"answer": "x", "tags": [], "ok": True}
    assert list(read.errors) == ["confidence"] and "no number in 'high'" in read.errors["confidence"]
    assert parse_output('{"answer": "x"}', MULTI) == (
        {"answer": "x"}, "reply lacks output field 'confidence'; reply lacks output field 'tags'; "
                         "reply lacks output field 'ok'")
    nothing = parse_reply("no idea", MULTI)
    assert nothing.parsed is None and nothing.parse_error == "reply is neither a JSON object nor 'field: value' lines"


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
