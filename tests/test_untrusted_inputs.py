"""Untrusted content stays data: hostile templates never run code, hostile case files are refused
with one line, and typed cases survive export → import in every format."""

import json
import os
import resource
import subprocess
import sys

import pytest

from promptlab.errors import UsageError
from promptlab.models import PromptContent, Signature
from promptlab.prompting.render import check_prompt, render_messages
from tests.conftest import SENTIMENT_EXPERIMENT

# Known jinja2 server-side template injection payloads (each runs code or leaks internals
# in a plain jinja2.Environment).
SSTI = [
    "{{ cycler.__init__.__globals__.os.popen('id').read() }} {{ text }}",
    "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ text.__class__ }}",
    "{{ text|attr('__class__') }}",
    "{{ text['__class__'] }}",
    "{% set a = '_' ~ '_class_' ~ '_' %}{{ text|attr(a) }}",
    "{{ request.application.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "{{ config.__class__.__init__.__globals__['os'].popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c.__name__ }}{% endfor %}",
    '{{ "{0.__class__}".format(text) }}',
    "{{ '{0.upper}'.format(text) }}",
    "{{ text.mro }}",
    "{{ namespace(x=text) }}",
    "{{ joiner() }}{{ text }}",
    "{% include 'x.txt' %}",
    "{% import 'x.txt' as x %}{{ text }}",
]
HONEST = ("{% if items %}Items: {{ items|join(', ') }}{% endif %}\n"
          "{% for i in items %}{{ loop.index }}. {{ i|upper }}\n{% endfor %}"
          "{% for n in range(2) %}{{ n }}{% endfor %} {{ text|replace('_', ' ')|trim }} {{ '%s!'|format(text) }}")


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def project(workspace):
    assert workspace.cli("project", "add", "demo").code == 0
    assert workspace.cli("signature", "add", "s", "-i", "text", "-i", "items:list",
                         "-o", "label:enum:positive,negative").code == 0
    assert workspace.cli("prompt", "add", "honest", "--signature", "s", "--template", HONEST).code == 0
    return workspace


# ---- templates ---------------------------------------------------------------------------
@pytest.mark.parametrize("signature", [["--signature", "s"], []], ids=["signature", "no-signature"])
@pytest.mark.parametrize("payload", SSTI)
def test_prompt_add_refuses_template_injection(project, payload, signature):
    before = project.counts()
    result = project.cli("prompt", "add", "p", *signature, "--template", payload)
    assert result.code == 2
    assert one_line(result).startswith("promptlab: error: prompt 'p'.template: ")
    assert project.counts() == before


@pytest.mark.parametrize("payload", SSTI)
def test_experiment_refuses_template_injection(workspace, payload):
    workspace.write("cases.jsonl", '{"text": "great", "label": "positive"}\n')
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT)
    assert workspace.cli("run", "exp.yaml").code == 0
    before, calls = workspace.counts(), workspace.fake.requests_total()
    for field in ("template", "system"):
        bad = SENTIMENT_EXPERIMENT.replace('"Review: {{ text }}"', json.dumps(payload)) if field == "template" \
            else SENTIMENT_EXPERIMENT.replace("system: Answer with one word.", f"system: {json.dumps(payload)}")
        workspace.write("exp.yaml", bad)
        result = workspace.cli("run", "exp.yaml")
        assert result.code == 2
        assert f"exp.yaml: prompts[0] 'one-word'.{field}: " in one_line(result)
        assert workspace.counts() == before and workspace.fake.requests_total() == calls


MARKER_PAYLOADS = [
    "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch {marker}') }}{{ text }}",
    "{% for c in text.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'Popen' %}"
    "{{ c(['touch', '{marker}']) }}{% endif %}{% endfor %}",
]


def store_payload(ws, payload: str) -> None:
    """Put a payload into a stored prompt version, bypassing every check (an older database)."""
    ws.rows("update prompts set template = ? where name = 'honest'", (payload,))


@pytest.mark.parametrize("payload", MARKER_PAYLOADS)
def test_payload_in_the_database_is_refused_before_any_call(project, payload):
    marker = project.root / "pwned"
    project.cli("case", "add", "-i", "text=great", "-i", 'items=["a"]', "-e", "label=positive")
    store_payload(project, payload.replace("{marker}", str(marker)))
    result = project.cli("eval", "--prompt", "honest", "--name", "r")
    assert result.code == 2
    assert "prompt 'honest@1'.template: " in one_line(result)
    assert not marker.exists()
    assert project.rows("select count(*) from runs") == [(0,)]
    assert project.fake.requests_total() == 0


@pytest.mark.parametrize("payload", MARKER_PAYLOADS)
def test_the_sandbox_alone_stops_a_payload_that_passes_the_checks(tmp_path, monkeypatch, payload):
    """Defence in depth: with the static checks switched off, rendering still runs no code."""
    from promptlab.prompting import render

    monkeypatch.setattr(render, "_refusal", lambda node: None)
    render._checked.cache_clear()
    marker = tmp_path / "pwned"
    content = PromptContent(template=payload.replace("{marker}", str(marker)))
    sig = Signature(name="s", inputs=["text"], outputs=["label"])
    try:
        check_prompt(content, sig)  # passes: only the sandbox stands in the way
        with pytest.raises(UsageError, match="the sandbox refused the template"):
            render_messages(content, sig, {"text": "great"})
    finally:
        render._checked.cache_clear()
    assert not marker.exists()


def test_honest_templates_render(project):
    project.fake.configure(record_bodies=True)
    project.cli("case", "add", "-i", "text=great_phone", "-i", 'items=["a", "b"]', "-e", "label=positive")
    result = project.cli("eval", "--prompt", "honest", "--name", "r")
    assert result.code == 0, result.stderr
    sent = project.fake.stats()["bodies"][0]["messages"][-1]["content"]
    assert sent == "Items: a, b\n1. A\n2. B\n01 great phone great_phone!"


def test_check_prompt_refuses_jinja_globals_and_keeps_range():
    sig = Signature(name="s", inputs=["text"], outputs=["answer"])
    with pytest.raises(UsageError, match="'cycler' is not an input"):
        check_prompt(PromptContent(template="{{ cycler.next() }}"), sig)
    with pytest.raises(UsageError, match="'lipsum' is a jinja2 global"):
        check_prompt(PromptContent(template="{{ lipsum() }}"), None)
    content = PromptContent(template="{% for i in range(3) %}{{ text }}{% endfor %}")
    check_prompt(content, sig)
    assert render_messages(content, sig, {"text": "x"}) == [{"role": "user", "content": "xxx"}]


# ---- case files --------------------------------------------------------------------------
def billion_laughs(levels: int = 9) -> str:
    """A YAML flow list of nine levels of nine-fold aliases: ~500 bytes, 9**9 strings."""
    nested = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    nested += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(nested)}]"


def run_limited(ws, *args: str) -> subprocess.CompletedProcess:
    """The real CLI in a child process that may use at most ~2 GB and 10 CPU seconds: a regression
    fails the test instead of eating the machine (CPU time, not wall time, so a busy machine
    does not fail it)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (10, 10))

    env = {**os.environ, "PROMPTLAB_CONFIG": str(ws.root / "promptlab.toml")}
    return subprocess.run([sys.executable, "-m", "promptlab", *args], cwd=ws.root, env=env,
                          capture_output=True, text=True, timeout=120, preexec_fn=limit)


BOMBS = {  # file name, its text, the command that reads it
    "cases": ("bomb.yaml", f"cases:\n  - {{text: great, items: {billion_laughs()}, label: positive}}\n",
              ("case", "import", "bomb.yaml")),
    "experiment": ("exp.yaml", SENTIMENT_EXPERIMENT.replace("inputs: [text]", "inputs: [text, items]").replace(
        "cases: {file: cases.jsonl}", f"cases: [{{text: great, label: positive, items: {billion_laughs()}}}]"),
        ("run", "exp.yaml")),
    "demos": ("demos.yaml", f"- {{inputs: {{text: a, items: {billion_laughs()}}}, outputs: {{label: positive}}}}\n",
              ("prompt", "add", "p", "--signature", "s", "--template", "{{ text }}", "--demos-file", "demos.yaml")),
    "signature": ("sig.yaml", f"name: t\ninstruction: {billion_laughs()}\ninputs: [a]\noutputs: [b]\n",
                  ("signature", "add", "t", "--file", "sig.yaml")),
}


@pytest.mark.parametrize("target", sorted(BOMBS))
def test_yaml_alias_bomb_is_refused(project, target):
    name, text, args = BOMBS[target]
    project.write(name, text)
    before = project.counts()
    result = run_limited(project, *args)
    assert result.returncode == 2, result.stderr[-500:]
    line = one_line(result)
    assert f"{name}: line " in line and "YAML aliases here expand past 100,000 values" in line
    assert project.counts() == before


def test_csv_with_a_byte_order_mark_imports(project):
    (project.root / "excel.csv").write_text('text,items,label\ngreat,"[""a""]",positive\n', encoding="utf-8-sig")
    result = project.cli("case", "import", "excel.csv")
    assert "imported 1 cases" in result.stdout, result.stderr
    [(inputs, expected)] = project.rows("select inputs, expected from cases")
    assert (json.loads(inputs), json.loads(expected)) == ({"text": "great", "items": ["a"]}, {"label": "positive"})


BAD_FILES = {
    "duplicate header": ("dup.csv", 'text,items,label,text\ngreat,[],positive,awful\n',
                         "dup.csv: the header has column 'text' twice"),
    "json NaN": ("nan.json", '[{"text": "a", "items": []}, {"text": "b", "items": [NaN]}]',
                 "nan.json: case 2: input 'items' holds nan"),
    "jsonl Infinity": ("inf.jsonl", '{"text": "a", "items": [], "label": "positive"}\n'
                                    '{"text": {"x": -Infinity}, "items": []}\n',
                       "inf.jsonl: case 2: input 'text' holds -inf"),
    "yaml .nan": ("nan.yaml", "- {text: a, items: [.nan]}\n", "nan.yaml: case 1: input 'items' holds nan"),
    "yaml .inf": ("inf.yaml", "- {text: .inf, items: []}\n", "inf.yaml: case 1: input 'text' holds inf"),
    "yaml date": ("date.yaml", "- {text: 2024-01-01, items: []}\n",
                  "date.yaml: case 1: input 'text' holds a date"),
    "json 40 levels": ("deep.json", json.dumps([{"text": "a", "items": json.loads("[" * 40 + "]" * 40)}]),
                       "deep.json: case 1: input 'items' is nested more than 32 levels deep"),
    "json 100000 levels": ("deeper.json", "[" * 100_000 + "]" * 100_000,
                           "deeper.json: nested more than 32 levels deep"),
    "jsonl 100000 levels": ("deeper.jsonl", '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
                            "deeper.jsonl: nested more than 32 levels deep"),
    "yaml 100000 levels": ("deeper.yaml", "- text: " + "[" * 100_000 + "]" * 100_000 + "\n",
                           "deeper.yaml: nested more than 32 levels deep"),
    "csv list cell": ("n.csv", "text,items,label\ngreat,a;b,positive\n",
                     "n.csv: case 1: input 'items': 'a;b' is not a list; write it as JSON"),
    "csv enum": ("e.csv", 'text,items,label\ngreat,[],neutral\n',
                 "e.csv: case 1: expected 'label': \"neutral\" is not one of positive, negative"),
    "json enum": ("e.json", '[{"text": "a", "items": [], "label": "Positive"}]',
                  "e.json: case 1: expected 'label': \"Positive\" is not one of positive, negative"),
    "json type": ("t.json", '[{"text": "a", "items": "a, b"}]',
                  "t.json: case 1: input 'items': \"a, b\" is not a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_hostile_case_files_exit_2_with_one_line(project, case):
    name, text, message = BAD_FILES[case]
    project.write(name, text)
    before = project.counts()
    result = project.cli("case", "import", name)
    assert result.code == 2
    assert message in one_line(result)
    assert project.counts() == before


def test_case_add_checks_types_and_choices(project):
    before = project.counts()
    for args, message in [
        (("-e", "label=neutral"), "case add: case 1: expected 'label': \"neutral\" is not one of positive, negative"),
        (("-e", "label=NaN"), "case add: case 1: expected 'label' holds nan"),
        (("-i", "items=7"), "case add: case 1: input 'items': 7 is not a list"),
        (("-i", "items=" + "[" * 40 + "]" * 40), "case add: case 1: input 'items' is nested more than 32 levels"),
        (("-i", "items=" + "[" * 20_000 + "]" * 20_000), "--input items: nested too deeply"),
    ]:
        result = project.cli("case", "add", "-i", "text=a", "-i", "items=[]", *args)
        assert result.code == 2
        assert message in one_line(result)
    assert project.counts() == before


def test_experiment_demos_and_cases_check_enum_choices(workspace):
    workspace.write("cases.jsonl", '{"text": "great", "label": "positive"}\n')
    demo = '    demos: [{inputs: {text: "fine"}, outputs: {label: meh}}]\n'
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT.replace('    template: "Review: {{ text }}"\n',
                                                             '    template: "Review: {{ text }}"\n' + demo))
    result = workspace.cli("run", "exp.yaml")
    assert result.code == 2
    assert ("exp.yaml: prompts[0] 'one-word': demo 1: output 'label': \"meh\" is not one of "
            "positive, negative" in one_line(result))
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT.replace(
        "cases: {file: cases.jsonl}", "cases: [{text: great, label: positive}, {text: ok, label: neutral}]"))
    result = workspace.cli("run", "exp.yaml")
    assert result.code == 2
    assert "exp.yaml: cases: case 2: expected 'label': \"neutral\" is not one of" in one_line(result)
    assert workspace.counts() == {}


def test_prompt_add_checks_demos(project):
    project.write("demos.yaml", "- {inputs: {text: a, items: []}, outputs: {label: meh}}\n")
    before = project.counts()
    result = project.cli("prompt", "add", "p", "--signature", "s", "--template", "{{ text }}",
                         "--demos-file", "demos.yaml")
    assert result.code == 2
    assert "prompt 'p': demo 1: output 'label': \"meh\" is not one of positive, negative" in one_line(result)
    assert project.counts() == before


TYPED_CASES = [
    {"text": "3", "n": 3, "ratio": 0.5, "whole": 2, "flag": True, "items": ["a", "b"], "meta": {"k": [1, None]},
     "raw": "3", "label": "pos", "count": 7},
    {"text": "true", "n": -1, "ratio": 2.0, "whole": 1.5, "flag": False, "items": [], "meta": "plain text",
     "raw": "[1]", "label": "neg", "count": 0},
]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "yaml"])
def test_typed_cases_survive_export_and_import(workspace, fmt):
    workspace.cli("project", "add", "demo")
    assert workspace.cli("signature", "add", "typed", "-i", "text", "-i", "n:int", "-i", "ratio:float",
                         "-i", "whole:float", "-i", "flag:bool", "-i", "items:list", "-i", "meta:json",
                         "-i", "raw", "-o", "label:enum:pos,neg", "-o", "count:int").code == 0
    workspace.write("in.jsonl", "".join(json.dumps(c) + "\n" for c in TYPED_CASES))
    assert "imported 2 cases" in workspace.cli("case", "import", "in.jsonl").stdout
    stored = workspace.rows("select inputs, expected from cases order by id")
    assert workspace.cli("case", "export", f"out.{fmt}").code == 0
    again = workspace.cli("case", "import", f"out.{fmt}")
    assert "imported 0 cases (2 already present)" in again.stdout, again.stderr
    assert workspace.rows("select inputs, expected from cases order by id") == stored


def test_a_template_cannot_build_a_huge_value(workspace):
    """`*` and `**` are capped: a repetition bomb is refused (statically, or at render time) before any call."""
    from promptlab.errors import UsageError
    from promptlab.models import PromptContent
    from promptlab.prompting.render import render_messages

    for template in ("{{ 'x' * 10**10 }}", "{{ ['a'] * 200000 }}", "{{ 7 ** 100000 }}"):
        with pytest.raises(UsageError, match="at most what a prompt needs|sandbox refused"):  # refused statically now
            render_messages(PromptContent(template=template), None, {})
    assert render_messages(PromptContent(template="{{ '-' * 3 }} {{ 2 ** 5 }}"), None, {})[-1]["content"] == "--- 32"
