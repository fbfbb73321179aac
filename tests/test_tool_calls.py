"""Tools: a version's tool specs go into the request (direct path, litellm, batch), the reply's
tool calls are parsed into a `tool_call` output, and tool_call_match scores name and arguments."""

from __future__ import annotations

import asyncio
import json

import pytest

from promptlab.models import FieldSpec, PromptContent
from promptlab.prompting.outputs import parse_output
from promptlab.prompting.tools import match, same_value
from promptlab.scorers import get_metric
from promptlab.scorers.base import ScoreInput
from tests.test_batch import batch_settings

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The time in a city.",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TOOLS = f"""    tools: {json.dumps([WEATHER, TIME])}
    tool_choice: auto
"""
EXPERIMENT = """\
project: tools
signature:
  name: assistant
  inputs: [question]
  outputs: [{name: call, type: tool_call}]
prompts:
  - name: p
    system: Use a tool.
    template: "{{ question }}"
%s
models: [fake]
cases:
  - {question: "Weather in Paris?", call: {name: get_weather, arguments: {city: Paris}}}
  - {question: "Weather in Paris?", call: {name: get_weather, arguments: {city: Paris, unit: celsius}}}
  - {question: "Weather in Paris?", call: {name: get_time, arguments: {city: Paris}}}
  - {question: "Tell me a joke", call: {name: get_time, arguments: {city: Paris}}}
metrics: [tool_call_match]
"""


def check_scores(ws) -> None:
    rows = ws.rows("select c.inputs, c.expected, r.score, r.passed, r.error_kind, r.parse_error, r.output "
                   "from results r join cases c on c.id = r.case_id order by c.id")
    scores = [(json.loads(i)["question"], json.loads(e)["call"]["name"], s, p, k) for i, e, s, p, k, _, _ in rows]
    assert scores == [("Weather in Paris?", "get_weather", 1.0, 1, None),
                      ("Weather in Paris?", "get_weather", 0.5, 0, None),   # unit missing: 1 of 2 arguments
                      ("Weather in Paris?", "get_time", 0.0, 0, None),      # another tool
                      ("Tell me a joke", "get_time", 0.0, 0, None)]         # no call: a failure, not an error
    assert json.loads(rows[0][6]) == {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    assert "no tool call" in rows[3][5]


def test_two_tools_are_sent_and_the_call_is_scored_1_half_0(workspace, call_path):
    workspace.fake.configure(record_bodies=True, tool_rules=[["Weather", "get_weather", {"city": "Paris"}]])
    result = workspace.cli("run", workspace.write("exp.yaml", EXPERIMENT % TOOLS), "--json")
    assert result.code == 1 or result.code == 0, result.stderr  # scores below 1 may fail no gate here
    bodies = workspace.fake.stats()["bodies"]
    assert bodies and all(b["tools"] == [WEATHER, TIME] and b["tool_choice"] == "auto" for b in bodies)
    check_scores(workspace)
    run = json.loads(result.stdout)["runs"][0]
    assert run["errors"] == 0 and run["scores"]["tool_call_match"] == pytest.approx(1.5 / 4)
    shown = workspace.cli("runs", "show", run["name"], "--case", "1", "--project", "tools")
    assert "tools offered: get_weather, get_time (tool_choice \"auto\")" in shown.stdout
    assert '"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]' in shown.stdout


@pytest.mark.slow  # a batch round trip through the fake Files/Batches API
def test_batch_mode_sends_the_tools_and_reads_the_calls(workspace):
    batch_settings(workspace)
    workspace.fake.configure(record_bodies=True, tool_rules=[["Weather", "get_weather", {"city": "Paris"}]])
    result = workspace.cli("run", workspace.write("exp.yaml", EXPERIMENT % TOOLS + "eval: {mode: batch}\n"), "--json")
    assert result.code in (0, 1), result.stderr
    assert workspace.fake.stats()["batches"]["created"] == 1
    assert all(b["tools"] == [WEATHER, TIME] for b in workspace.fake.stats()["bodies"])
    check_scores(workspace)


def test_a_call_written_as_json_text_is_parsed_for_models_without_native_tools(workspace):
    workspace.fake.configure(rules=[["Weather", 'Sure: {"name": "get_weather", "arguments": {"city": "Paris"}}']])
    result = workspace.cli("run", workspace.write("exp.yaml", EXPERIMENT % ""), "--json")
    assert result.code in (0, 1), result.stderr
    assert [r[0] for r in workspace.rows("select score from results order by case_id")] == [1.0, 0.5, 0.0, 0.0]


def test_the_tools_are_part_of_the_version_and_single_turn_versions_keep_their_hash():
    plain = PromptContent(template="{{ q }}")
    assert plain.hash() == PromptContent(template="{{ q }}", tools=(), tool_choice=None).hash()
    with_tools = PromptContent(template="{{ q }}", tools=(WEATHER,))
    assert with_tools.hash() != plain.hash()
    assert PromptContent(template="{{ q }}", tools=(WEATHER,), tool_choice="required").hash() != with_tools.hash()


@pytest.mark.parametrize("tools, choice, problem", [
    ([{"type": "function"}], None, "tools[1] is not"),
    ([WEATHER, WEATHER], None, "a second tool named 'get_weather'"),
    ([], "auto", "tool_choice needs tools"),
    ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "tool_choice must be"),
])
def test_bad_tools_are_refused_with_the_field_named(workspace, tools, choice, problem):
    text = EXPERIMENT % f"    tools: {json.dumps(tools)}\n    tool_choice: {json.dumps(choice)}"
    result = workspace.cli("run", workspace.write("exp.yaml", text))
    assert result.code == 2 and problem in result.stderr and "prompts" in result.stderr
    assert workspace.fake.stats()["total"] == 0


def test_the_embedded_model_refuses_tools_before_any_call(workspace):
    result = workspace.cli("run", workspace.write("exp.yaml", EXPERIMENT % TOOLS), "--model", "local")
    assert result.code == 2
    assert "embedded text model" in result.stderr and "cannot take 2 tools" in result.stderr
    assert workspace.rows("select count(*) from runs") == [(0,)]


def test_prompt_add_export_and_load_prompt_keep_the_tools(workspace, tmp_path):
    from promptlab.api import load_prompt

    first = workspace.cli("run", workspace.write("exp.yaml", EXPERIMENT % TOOLS), "--json")
    assert first.code in (0, 1), first.stderr
    exported = workspace.cli("prompt", "export", "p", "--project", "tools")
    assert exported.code == 0, exported.stderr
    assert "get_weather" in exported.stdout and "tool_choice: auto" in exported.stdout
    loaded = load_prompt("p", project="tools", db=workspace.db_path)
    assert loaded.params["tools"] == [WEATHER, TIME] and loaded.params["tool_choice"] == "auto"
    workspace.write("tools.yaml", json.dumps([WEATHER]))
    added = workspace.cli("prompt", "add", "q", "--project", "tools", "--signature", "assistant",
                          "--template", "{{ question }}", "--tools-file", "tools.yaml", "--tool-choice", "get_weather")
    assert added.code == 0, added.stderr
    workspace.write("bad.yaml", json.dumps([WEATHER, WEATHER]))
    refused = workspace.cli("prompt", "add", "r", "--project", "tools", "--template", "{{ question }}",
                            "--tools-file", "bad.yaml")
    assert refused.code == 2 and "prompt r: tools[2]: a second tool named 'get_weather'" in refused.stderr
    version = load_prompt("q", project="tools", db=workspace.db_path).version
    assert version.content.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    shown = workspace.cli("prompt", "show", "q", "--project", "tools")
    assert "# tool get_weather" in shown.stdout
    workspace.fake.configure(tool_rules=[["Paris", "get_weather", {"city": "Paris"}]])
    tried = workspace.cli("prompt", "try", "q", "--project", "tools", "-i", "question=Paris?", "--json")
    assert tried.code == 0, tried.stderr
    assert json.loads(tried.stdout)["parsed"] == {"call": {"name": "get_weather", "arguments": {"city": "Paris"}}}


CALL = (FieldSpec(name="call", type="tool_call"),)


@pytest.mark.parametrize("reply", [
    '{"tool_calls": [{"name": "f", "arguments": {"x": 1}}]}',
    '{"name": "f", "arguments": {"x": 1}}',
    '```json\n{"name": "f", "parameters": {"x": 1}}\n```',
    '{"type": "function", "function": {"name": "f", "arguments": "{\\"x\\": 1}"}}',
    '[{"name": "f", "arguments": {"x": 1}}, {"name": "g", "arguments": {}}]',
])
def test_a_tool_call_parses_from_each_shape_models_write(reply):
    from promptlab.models import Signature

    sig = Signature(name="s", inputs=["q"], outputs=list(CALL))
    assert parse_output(reply, sig) == ({"call": {"name": "f", "arguments": {"x": 1}}}, None)


@pytest.mark.parametrize("a, b, same", [
    (1, 1.0, True), ("1", 1, False), (True, 1, False), (False, 0, False), ("Paris", "paris", False),
    ({"a": [1, "x"]}, {"a": [1.0, "x"]}, True), (None, None, True), (None, "", False), ([1], [1, 2], False),
])
def test_argument_values_compare_by_type(a, b, same):
    assert same_value(a, b) is same


def test_partial_credit_counts_the_arguments_of_either_call():
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert match(call, {"name": "get_weather", "arguments": {"city": "Paris"}})[0] == 1.0
    assert match(call, {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}})[0] == 0.5
    assert match({"name": "get_weather", "arguments": {"city": "Paris", "unit": "k"}},
                 {"name": "get_weather", "arguments": {"city": "Rome", "unit": "k"}})[0] == 0.5
    assert match(call, {"name": "get_time", "arguments": {"city": "Paris"}})[0] == 0.0
    assert match({"name": "now", "arguments": {}}, {"name": "now"})[0] == 1.0
    metric = get_metric("tool_call_match")
    unscorable = asyncio.run(metric.score(ScoreInput(output="x", parsed={"call": call}, parse_error=None,
                                                     expected={}, inputs={}, outputs=CALL)))
    assert unscorable.value is None  # no expected call: not scored, not a failure
