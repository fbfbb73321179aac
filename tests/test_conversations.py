"""Conversations: a `messages` input holds earlier turns, sent between the version's system
text and demos and the user turn its template renders — in every case-file format, over the
direct path and litellm's, fully cached on a re-run."""

from __future__ import annotations

import csv
import io
import json

import pytest
import yaml

from promptlab.models import Demo, PromptContent, Signature
from promptlab.prompting.render import render_messages

HISTORY = [{"role": "user", "content": "I am planning a trip to Paris."},
           {"role": "assistant", "content": "Lovely! When are you going?"},
           {"role": "user", "content": "In May, for a week."}]
EXPERIMENT = """\
project: chat
signature:
  name: followup
  inputs: [{name: history, type: messages}, {name: question, type: string}]
  outputs: [answer]
prompts:
  - name: p
    system: You are a travel assistant.
    template: "Question: {{ question }}"
models: [fake]
cases: {file: %s}
metrics: [exact_match]
"""
ROWS = [{"history": HISTORY, "question": "What should I pack?", "answer": "umbrella"},
        {"history": HISTORY[:1], "question": "Is it far?", "answer": "no"}]


def write_cases(ws, fmt: str) -> str:
    """ROWS as a case file in `fmt` (CSV cells hold the turns as JSON)."""
    name = f"cases.{fmt}"
    if fmt == "jsonl":
        ws.write(name, "".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "json":
        ws.write(name, json.dumps(ROWS))
    elif fmt == "yaml":
        ws.write(name, yaml.safe_dump(json.loads(json.dumps(ROWS))))  # no shared objects: no aliases
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["history", "question", "answer"])
        writer.writeheader()
        writer.writerows({**r, "history": json.dumps(r["history"])} for r in ROWS)
        ws.write(name, out.getvalue())
    return name


def sent_messages(ws) -> list[list[dict]]:
    return sorted((b["messages"] for b in ws.fake.stats()["bodies"]), key=lambda m: len(m), reverse=True)


def test_a_three_turn_conversation_is_sent_in_order_then_a_rerun_is_fully_cached(workspace, call_path):
    workspace.fake.configure(record_bodies=True, rules=[["pack", "umbrella"], ["far", "no"]])
    exp = workspace.write("exp.yaml", EXPERIMENT % write_cases(workspace, "jsonl"))
    first = workspace.cli("run", exp, "--json")
    assert first.code == 0, first.stderr
    assert json.loads(first.stdout)["runs"][0]["scores"]["exact_match"] == 1.0
    longest = sent_messages(workspace)[0]
    assert longest == [{"role": "system", "content": "You are a travel assistant."}, *HISTORY,
                       {"role": "user", "content": "Question: What should I pack?"}]
    calls = workspace.fake.stats()["total"]
    assert calls == 2

    again = workspace.cli("run", exp, "--json")
    assert again.code == 0, again.stderr
    run = json.loads(again.stdout)["runs"][0]
    assert run["cached"] == 2 and run["provider_calls"] == 0
    assert workspace.fake.stats()["total"] == calls  # nothing sent again


@pytest.mark.parametrize("fmt", ["csv", "json", "yaml"])
def test_every_case_format_carries_the_turns(workspace, fmt):
    workspace.fake.configure(record_bodies=True)
    result = workspace.cli("run", workspace.write("exp.yaml", EXPERIMENT % write_cases(workspace, fmt)), "--json")
    assert result.code == 0, result.stderr
    assert sent_messages(workspace)[0][1:4] == HISTORY
    exported = workspace.cli("case", "export", "out.csv", "--project", "chat")
    assert exported.code == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO((workspace.root / "out.csv").read_text())))
    assert sorted(json.loads(r["history"]) for r in rows) == sorted([HISTORY, HISTORY[:1]])  # JSON cells


def test_demos_carry_their_own_histories_before_the_cases_turns():
    sig = Signature(name="s", inputs=[{"name": "history", "type": "messages"}, "question"], outputs=["answer"])
    demo = Demo(inputs={"history": [{"role": "user", "content": "Hi, I am Ann."},
                                    {"role": "assistant", "content": "Hello Ann."}],
                        "question": "What is my name?"}, outputs={"answer": "Ann"})
    content = PromptContent(system="Be brief.", template="{{ question }}", demos=(demo,))
    messages = render_messages(content, sig, {"history": HISTORY[:2], "question": "Where am I going?"})
    assert [(m["role"], m["content"]) for m in messages] == [
        ("system", "Be brief."), ("user", "Hi, I am Ann."), ("assistant", "Hello Ann."),
        ("user", "What is my name?"), ("assistant", "Ann"),
        ("user", HISTORY[0]["content"]), ("assistant", HISTORY[1]["content"]),
        ("user", "Where am I going?")]


@pytest.mark.parametrize("history, problem", [
    ('"just text"', "not a list of {role, content} turns"),
    ('[{"role": "system", "content": "x"}]', "turn 1 has role \"system\"; use user or assistant"),
    ('[{"role": "user"}]', "turn 1 is not an object with exactly 'role' and 'content'"),
    ('[{"role": "user", "content": 5}]', "turn 1's content is not text"),
])
def test_a_malformed_history_is_bad_input_naming_the_case_and_field(workspace, history, problem):
    workspace.write("cases.jsonl", f'{{"history": {history}, "question": "q", "answer": "a"}}\n')
    result = workspace.cli("run", workspace.write("exp.yaml", EXPERIMENT % "cases.jsonl"))
    assert result.code == 2
    assert "case 1" in result.stderr and "'history'" in result.stderr and problem in result.stderr
    assert workspace.fake.stats()["total"] == 0 and workspace.counts().get("runs", 0) == 0


def test_prompt_try_and_runs_show_case_print_the_turns(workspace):
    workspace.write("cases.jsonl", json.dumps(ROWS[0]) + "\n")
    workspace.fake.configure(rules=[["pack", "umbrella"]])
    run = workspace.cli("run", workspace.write("exp.yaml", EXPERIMENT % "cases.jsonl"), "--json")
    assert run.code == 0, run.stderr
    name = json.loads(run.stdout)["runs"][0]["name"]
    shown = workspace.cli("runs", "show", name, "--case", "1", "--project", "chat")
    assert shown.code == 0, shown.stderr
    assert shown.stdout.index("--- assistant\nLovely!") < shown.stdout.index("--- user\nQuestion: What should I pack?")
    tried = workspace.cli("prompt", "try", "p", "--project", "chat", "--json",
                          "-i", f"history={json.dumps(HISTORY[:1])}", "-i", "question=Is it far?")
    assert tried.code == 0, tried.stderr
    assert json.loads(tried.stdout)["messages"][1] == HISTORY[0]


def test_the_embedded_model_reads_a_conversation_in_order():
    from promptlab.providers.local import messages_to_prompt

    sig = Signature(name="s", inputs=[{"name": "history", "type": "messages"}, "question"], outputs=["answer"])
    messages = render_messages(PromptContent(system="Be brief.", template="{{ question }}"), sig,
                               {"history": HISTORY, "question": "What should I pack?"})
    prompt, _ = messages_to_prompt(messages)
    positions = [prompt.index(text) for text in ("Be brief.", *(t["content"] for t in HISTORY), "What should I pack?")]
    assert positions == sorted(positions)
