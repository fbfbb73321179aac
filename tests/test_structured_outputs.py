"""Structured outputs (issue 24): a version with `structured: true` decodes its replies to the
signature's schema — `response_format` on OpenAI-compatible servers and LiteLLM providers, vLLM's
choice lists, a grammar on the embedded model — and versions without it send what they always did."""

from __future__ import annotations

import json

import pytest

from promptlab.config import ModelConfig
from promptlab.errors import UsageError
from promptlab.models import Demo, PromptContent, Signature, content_hash
from promptlab.prompting.structured import decoding, output_schema, response_format, with_decoding

EXTRACTION = Signature(
    name="review facts", instruction="Read the review.", inputs=["text"],
    outputs=[{"name": "score", "type": "float", "description": "0 (hated it) to 1 (loved it)"},
             {"name": "sentiment", "type": "enum", "choices": ["positive", "negative", "mixed"]},
             {"name": "topic", "type": "string"},
             {"name": "stars", "type": "int"}, {"name": "recommends", "type": "bool"},
             {"name": "tags", "type": "list"}])
LABEL = ["label:enum:positive,negative"]


def test_the_schema_is_built_from_the_signature():
    schema = output_schema(EXTRACTION)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["score", "sentiment", "topic", "stars", "recommends", "tags"]
    props = schema["properties"]
    assert props["score"] == {"type": "number", "description": "0 (hated it) to 1 (loved it)"}
    assert props["sentiment"] == {"type": "string", "enum": ["positive", "negative", "mixed"]}
    assert props["topic"] == {"type": "string"} and props["stars"] == {"type": "integer"}
    assert props["recommends"] == {"type": "boolean"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    fmt = response_format(EXTRACTION)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "review_facts"  # OpenAI's name pattern: [A-Za-z0-9_-]
    assert fmt["json_schema"]["schema"] == schema
    # a `json` field leaves its value open, which strict mode does not take
    open_field = Signature(name="s", inputs=["x"], outputs=[{"name": "data", "type": "json"}])
    assert response_format(open_field)["json_schema"]["strict"] is False


def test_versions_that_are_not_structured_keep_their_hash_and_cache_key():
    """Pinned from before structured outputs existed: the same content hash and response-cache key."""
    from promptlab.providers.gateway import chat_key

    content = PromptContent(system="Answer with one word.", template="Review: {{ text }}",
                            demos=(Demo(inputs={"text": "great"}, outputs={"label": "positive"}),),
                            params={"temperature": 0})
    assert content.hash() == "0f0cdfd4727a4bb57b002fe8e6aa4909dc41819fde31b3dbfcf36be426665994"
    model = ModelConfig(alias="fake", model="openai/fake", api_base="http://127.0.0.1:1/v1")
    no_decoding = decoding(content, None, None, model="fake", ref="p@1")
    assert not no_decoding.structured and no_decoding.params == {}
    params = with_decoding(content.params, no_decoding, "p@1")
    assert chat_key(model, [{"role": "user", "content": "Review: great"}], params) == \
        "d2efcea7416f6be714691c3611a3cc5631d04525fd1f85d5b8348d4bbf60cd77"
    structured = content.model_copy(update={"structured": True})
    assert structured.hash() != content.hash()
    fields = {k: v for k, v in content.as_json().items() if k != "demo_selector"}
    assert structured.hash() == content_hash({**fields, "structured": True})


def test_each_mechanism_sends_what_its_provider_takes():
    sig = Signature(name="sentiment", inputs=["text"],
                    outputs=[{"name": "label", "type": "enum", "choices": ["positive", "negative"]}])
    content = PromptContent(template="{{ text }}", structured=True)
    fmt = response_format(sig)
    for mode in ("response_format", "grammar"):
        assert decoding(content, sig, mode, model="m", ref="p@1").params == {"response_format": fmt}
    vllm = decoding(content, sig, "vllm", model="m", ref="p@1")
    assert vllm.params == {"extra_body": {"structured_outputs": {"choice": ["positive", "negative"]}}}
    assert decoding(content, sig, "vllm_guided", model="m", ref="p@1").params == \
        {"extra_body": {"guided_choice": ["positive", "negative"]}}
    # several fields: the JSON schema (vLLM takes response_format; before 0.12, guided_json)
    assert decoding(content, EXTRACTION, "vllm", model="m", ref="p@1").params == \
        {"response_format": response_format(EXTRACTION)}
    assert decoding(content, EXTRACTION, "vllm_guided", model="m", ref="p@1").params == \
        {"extra_body": {"guided_json": output_schema(EXTRACTION)}}
    # a version's own extra_body is kept beside vLLM's choice list; a clash is refused
    assert with_decoding({"extra_body": {"top_k": 5}}, vllm, "p@1") == \
        {"extra_body": {"top_k": 5, "structured_outputs": {"choice": ["positive", "negative"]}}}
    with pytest.raises(UsageError, match="params.response_format clashes"):
        with_decoding({"response_format": {"type": "json_object"}},
                      decoding(content, sig, "response_format", model="m", ref="p@1"), "p@1")


def test_a_model_that_cannot_is_refused_unless_the_version_allows_the_fallback():
    sig = Signature(name="s", inputs=["x"], outputs=["y"])
    strict = PromptContent(template="{{ x }}", structured=True)
    with pytest.raises(UsageError, match="model 'cohere-r' cannot constrain its decoding"):
        decoding(strict, sig, "none", model="cohere-r", ref="p@1")
    loose = decoding(strict.model_copy(update={"structured_fallback": True}), sig, "none",
                     model="cohere-r", ref="p@1")
    assert loose.structured and not loose.constrained and loose.params == {} and "cohere-r" in loose.note
    with pytest.raises(ValueError, match="structured_fallback is for a structured prompt"):
        PromptContent(template="{{ x }}", structured_fallback=True)


def test_each_route_has_its_mechanism():
    from promptlab.providers.gateway import structured_mode

    assert structured_mode(ModelConfig(model="local/gemma-3-270m")) == "grammar"
    assert structured_mode(ModelConfig(model="hosted_vllm/qwen", api_base="http://h/v1")) == "vllm"
    assert structured_mode(ModelConfig(model="openai/any", api_base="http://h/v1")) == "response_format"
    assert structured_mode(ModelConfig(model="gpt-4o-mini")) == "response_format"
    assert structured_mode(ModelConfig(model="anthropic/claude-3-5-haiku-latest")) == "response_format"
    assert structured_mode(ModelConfig(model="cohere/command-r")) == "none"  # LiteLLM's adapter takes none
    assert structured_mode(ModelConfig(model="cohere/command-r", structured_outputs="response_format")) \
        == "response_format"  # the user says it does


# ---- through the CLI, against the fake OpenAI-compatible server ----------------------------------
def structured_project(ws) -> None:
    ws.sentiment_project([{"text": "great phone", "label": "positive"},
                          {"text": "awful phone", "label": "negative"},
                          {"text": "meh phone", "label": "positive"}])
    added = ws.cli("prompt", "add", "p", "--signature", "sentiment", "--template", "Review: {{ text }}",
                   "--structured", "-m", "decode to the labels")
    assert added.code == 0 and added.stdout.startswith("p@2"), added.stderr


def bodies(ws) -> list[dict]:
    return [b for b in ws.fake.stats()["bodies"] if isinstance(b, dict) and "messages" in b]


def test_a_structured_version_sends_the_schema_and_load_prompt_gives_the_same(workspace, call_path):
    import promptlab

    ws = workspace
    structured_project(ws)
    ws.fake.configure(record_bodies=True)
    plain = ws.cli("eval", "--prompt", "p@1", "--json", "--no-cache")
    assert plain.code == 0, plain.stderr
    sent_plain = bodies(ws)
    assert len(sent_plain) == 3 and not any("response_format" in b for b in sent_plain)
    assert json.loads(plain.stdout)["runs"][0]["decoding"] == \
        {"structured": False, "constrained": False, "mechanism": None}

    ws.fake.reset()
    ws.fake.configure(record_bodies=True, rules=[["great", "positive"], ["awful", "negative"]],
                      default_reply="positive, I think")
    result = ws.cli("eval", "--prompt", "p@2", "--json", "--no-cache")
    assert result.code == 0, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    sent = bodies(ws)
    assert len(sent) == 3
    fmt = sent[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["properties"]["label"]["enum"] == ["positive", "negative"]
    # the messages are those of the unstructured version: only the decoding differs
    assert sorted(b["messages"][-1]["content"] for b in sent) == \
        sorted(b["messages"][-1]["content"] for b in sent_plain)
    # replies come back as {"label": ...} (a server enforcing the schema) and parse with the same parser
    assert run["parse_failures"] == 0 and run["decoding"] == \
        {"structured": True, "constrained": True, "mechanism": "response_format"}
    assert run["scores"]["exact_match"] == 1.0  # "positive, I think" was decoded to the choice
    shown = ws.cli("eval", "--prompt", "p@2")  # cached now: the terminal says how it decoded
    assert "decoding constrained to the signature (response_format), 0 parse failures" in shown.stdout

    loaded = promptlab.load_prompt("p@2", project="demo", db=ws.db_path)
    assert loaded.response_format == fmt
    assert promptlab.load_prompt("p@1", project="demo", db=ws.db_path).response_format is None
    from promptlab.config import load_settings

    assert loaded.params_for(load_settings().resolve_model("fake")) == {"response_format": fmt}


def test_structured_is_shown_diffed_exported_and_recreated(workspace):
    ws = workspace
    structured_project(ws)
    shown = ws.cli("prompt", "show", "p@2")
    assert "# structured\ntrue" in shown.stdout
    assert json.loads(ws.cli("prompt", "show", "p@2", "--json").stdout)["structured"] is True
    assert "# structured" not in ws.cli("prompt", "show", "p@1").stdout
    diff = ws.cli("prompt", "diff", "p@1", "p@2")
    assert "+# structured" in diff.stdout and "+true" in diff.stdout
    exported = ws.cli("prompt", "export", "p@2")
    assert "structured: true" in exported.stdout
    assert "structured" not in ws.cli("prompt", "export", "p@1").stdout  # off: left out, as before
    hashes = {r[0] for r in ws.rows("select content_hash from prompts where name = 'p'")}
    entry = "\n".join(line for line in exported.stdout.splitlines() if not line.startswith("#"))
    ws.write("exp.yaml", "project: demo\nsignature:\n  name: sentiment\n  inputs: [text]\n  outputs:\n"
                         "    - {name: label, type: enum, choices: [positive, negative]}\n"
                         f"prompts:\n{entry}\nmodels: [fake]\ncases: {{file: cases.jsonl}}\n")
    assert ws.cli("run", "exp.yaml").code == 0
    again = ws.rows("select content_hash from prompts where name = 'p' and structured = 1")
    assert {h for (h,) in again} <= hashes


def test_a_model_that_cannot_exits_2_before_any_call(workspace):
    ws = workspace
    structured_project(ws)
    with open(ws.root / "promptlab.toml", "a") as toml:
        toml.write(f'\n[models.plain]\nmodel = "openai/plain"\napi_base = "{ws.fake.base_url}"\n'
                   f'structured_outputs = "none"\n')
    ws.fake.reset()
    runs_before = ws.counts()["runs"]
    refused = ws.cli("eval", "--prompt", "p@2", "--model", "plain")
    assert refused.code == 2 and "model 'plain' cannot constrain its decoding" in refused.stderr
    assert ws.fake.stats()["total"] == 0 and ws.counts()["runs"] == runs_before
    ws.write("exp.yaml", "project: demo\nsignature:\n  name: sentiment\n  inputs: [text]\n  outputs:\n"
                         "    - {name: label, type: enum, choices: [positive, negative]}\n"
                         "prompts:\n  - {name: q, template: '{{ text }}', structured: true}\n"
                         "models: [plain]\ncases: {file: cases.jsonl}\n")
    from_file = ws.cli("run", "exp.yaml")
    assert from_file.code == 2 and "model 'plain' cannot" in from_file.stderr
    assert ws.fake.stats()["total"] == 0 and ws.counts()["runs"] == runs_before

    assert ws.cli("prompt", "add", "p", "--signature", "sentiment", "--template", "Review: {{ text }}",
                  "--structured", "--structured-fallback").code == 0
    ws.fake.configure(record_bodies=True)
    allowed = ws.cli("eval", "--prompt", "p@3", "--model", "plain", "--json")
    assert allowed.code == 0, allowed.stderr
    run = json.loads(allowed.stdout)["runs"][0]
    assert run["decoding"]["structured"] and not run["decoding"]["constrained"]
    assert "cannot constrain" in run["decoding"]["note"]
    assert not any("response_format" in b for b in bodies(ws))
    bad = ws.cli("prompt", "add", "p", "--template", "x", "--structured-fallback")
    assert bad.code == 2 and "structured_fallback is for a structured prompt" in bad.stderr
    unsigned = ws.cli("prompt", "add", "u", "--template", "{{ text }}", "--structured")
    assert unsigned.code == 2 and "structured decoding needs a signature" in unsigned.stderr


@pytest.mark.parametrize("mode, sent", [
    ("vllm", {"structured_outputs": {"choice": ["positive", "negative"]}}),
    ("vllm_guided", {"guided_choice": ["positive", "negative"]}),
])
def test_vllm_takes_the_choices_as_guided_decoding(workspace, call_path, mode, sent):
    ws = workspace
    structured_project(ws)
    with open(ws.root / "promptlab.toml", "a") as toml:
        toml.write(f'\n[models.vllm]\nmodel = "hosted_vllm/qwen"\napi_base = "{ws.fake.base_url}"\n'
                   + (f'structured_outputs = "{mode}"\n' if mode != "vllm" else ""))
    ws.fake.configure(record_bodies=True, default_reply="positive, I think")
    result = ws.cli("eval", "--prompt", "p@2", "--model", "vllm", "--json", "--no-cache")
    assert result.code == 0, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    assert run["decoding"]["mechanism"] == mode and run["parse_failures"] == 0
    assert run["scores"]["exact_match"] == 1.0  # bare choices, as the few-shot demos are written
    for body in bodies(ws):
        assert {k: body[k] for k in sent} == sent and "response_format" not in body


def test_batch_mode_sends_the_same_bodies(workspace):
    ws = workspace
    structured_project(ws)
    with open(ws.root / "promptlab.toml", "a") as toml:
        toml.write("\n[batch]\npoll_s = 0.05\n")
    ws.fake.configure(record_bodies=True, default_reply="positive, I think")
    assert ws.cli("eval", "--prompt", "p@2", "--no-cache", "--name", "calls").code == 0
    batch = ws.cli("eval", "--prompt", "p@2", "--no-cache", "--batch", "--name", "batch", "--json")
    assert batch.code == 0, batch.stderr
    sent = bodies(ws)
    per_call, batched = sent[:3], sent[3:]
    assert len(batched) == 3
    key = lambda b: b["messages"][-1]["content"]  # noqa: E731
    for call, item in zip(sorted(per_call, key=key), sorted(batched, key=key)):
        assert item["response_format"] == call["response_format"] and item["messages"] == call["messages"]
    assert json.loads(batch.stdout)["runs"][0]["parse_failures"] == 0


def test_an_experiment_file_takes_structured(workspace):
    ws = workspace
    ws.write("cases.jsonl", '{"text": "great", "label": "positive"}\n{"text": "awful", "label": "negative"}\n')
    base = ("project: demo\nsignature:\n  name: sentiment\n  inputs: [text]\n  outputs:\n"
            "    - {name: label, type: enum, choices: [positive, negative]}\n"
            "prompts:\n  - {name: q, template: 'Review: {{ text }}', %s}\n"
            "models: [fake]\ncases: {file: cases.jsonl}\n")
    ws.write("bad.yaml", base % "structured_fallback: true")
    bad = ws.cli("run", "bad.yaml")
    assert bad.code == 2 and "bad.yaml" in bad.stderr and "structured_fallback is for a structured" in bad.stderr
    assert not ws.db_path.exists() or ws.counts().get("runs", 0) == 0
    ws.write("exp.yaml", base % "structured: true")
    ws.fake.configure(record_bodies=True)
    ran = ws.cli("run", "exp.yaml", "--json")
    assert ran.code == 0, ran.stderr
    assert all("response_format" in b for b in bodies(ws))
    assert ws.rows("select structured, structured_fallback from prompts where name = 'q'") == [(1, 0)]


@pytest.mark.parametrize("strategy", ["iterative", "bootstrap", "genetic", "mcts", "reflect"])
def test_every_strategy_keeps_structured_decoding_when_it_raises_val(workspace, strategy):
    """A world where only decoding helps: the model's free text ("positive-ish") never parses, and
    the same answer decoded to the signature's choices is right. No text or demo edit changes it."""
    from tests.test_optimizers import optimize, world

    ws = workspace
    world(ws)
    ws.fake.configure(rules=[["good", "positive-ish"], ["bad", "negative-ish"]], default_reply="maybe")
    result, data = optimize(ws, "--strategy", strategy, "--budget-calls", "300", "--seed", "1",
                            "--name", f"s-{strategy}", "--knob", "use_proposer=false")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["base"]["val"] == 0.0 and report["winner"]["val"] == 1.0 and report["winner"]["test"] == 1.0
    winner = json.loads(ws.cli("prompt", "show", report["winner"]["ref"], "--project", "p", "--json").stdout)
    assert winner["structured"] is True
    assert "+# structured" in report["diff"]


# ---- the embedded model: the grammar ---------------------------------------------------------------
def test_the_embedded_model_decodes_a_one_field_enum_as_its_bare_choices():
    pytest.importorskip("llama_cpp")
    from promptlab.providers.local_grammar import grammar_for

    sig = Signature(name="s", inputs=["text"],
                    outputs=[{"name": "label", "type": "enum", "choices": ["positive", 'say "no"']}])
    grammar = grammar_for(response_format(sig), 64)
    # bare, as few-shot demos write the label (a space may lead: "Sentiment: positive")
    assert grammar._grammar == 'root ::= " "? ("positive" | "say \\"no\\"")'
    assert grammar_for(None, 64) is None and grammar_for({"type": "text"}, 64) is None


def test_the_embedded_model_decodes_several_fields_as_json_with_capped_strings():
    pytest.importorskip("llama_cpp")
    from promptlab.providers.local_grammar import grammar_for
    from promptlab.providers.local import LocalModelError

    text = grammar_for(response_format(EXTRACTION), 64)._grammar
    assert '"\\"sentiment\\""' in text and '"\\"positive\\"" | "\\"negative\\"" | "\\"mixed\\""' in text
    assert "number" in text and "integer" in text and "boolean" in text
    # JSON strings hold no raw control characters (llama-cpp-python's converter lets a newline in)
    assert 'char ::= [^"\\\\\\x7F\\x00-\\x1F]' in text
    # the free string is capped (a nested run of optional chars), so the object closes in time
    topic = next(line for line in text.splitlines() if line.startswith("topic ::="))
    assert "char*" not in topic and 8 <= topic.count("char") <= 64
    wider = grammar_for(response_format(EXTRACTION), 400)._grammar
    assert next(line for line in wider.splitlines() if line.startswith("topic ::=")).count("char") > topic.count("char")
    with pytest.raises(LocalModelError, match="json_schema"):
        grammar_for({"type": "json_schema", "json_schema": {"name": "x"}}, 64)


FACTS_EXPERIMENT = """\
project: facts
signature:
  name: review_facts
  instruction: Read the review and give its facts as JSON with the keys score, sentiment and summary.
  inputs: [text]
  outputs:
    - {name: score, type: float, description: "how much the reviewer liked it, 0 to 1"}
    - {name: sentiment, type: enum, choices: [positive, negative, mixed]}
    - {name: summary, type: string, description: "the review in a few words"}
prompts:
  - {name: facts, template: "Review: {{ text }}\\nFacts:", structured: true}
models: [local]
cases:
  - {text: "The battery lasts two full days and charging is quick.", score: 0.9, sentiment: positive, summary: long battery}
  - {text: "Service was slow and the burger was dry and tasteless.", score: 0.1, sentiment: negative, summary: slow, dry}
  - {text: "Great screen, but the speakers are tinny.", score: 0.6, sentiment: mixed, summary: good screen, weak sound}
  - {text: "A depressing mess of a movie that I regret paying for.", score: 0.0, sentiment: negative, summary: bad film}
  - {text: "The sushi was fresh and beautifully presented.", score: 0.9, sentiment: positive, summary: fresh sushi}
  - {text: "Comfortable strap, though the watch runs a minute fast every week.", score: 0.6, sentiment: mixed, summary: comfy}
metrics: [exact_match]
"""


@pytest.mark.slow  # a minute of the real embedded model
def test_a_float_an_enum_and_a_string_all_parse_on_the_embedded_model(tmp_path):
    """Unconstrained, this 270M model's replies to a multi-field signature mostly fail to parse;
    under the grammar every one is a JSON object of the signature's fields."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("llama_cpp")
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "exp.yaml").write_text(FACTS_EXPERIMENT)
    (tmp_path / "promptlab.toml").write_text('[defaults]\nmodel = "local"\n\n[models.local]\n'
                                             'model = "local/gemma-3-270m"\n')
    env = {**os.environ, "PROMPTLAB_CONFIG": str(tmp_path / "promptlab.toml"), "PYTHONPATH": str(root),
           "HF_HUB_OFFLINE": "1"}
    env.pop("PROMPTLAB_DB", None)
    out = subprocess.run([sys.executable, "-m", "promptlab", "run", "exp.yaml", "--json"], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    run = json.loads(out.stdout)["runs"][0]
    assert run["n"] == 6 and run["errors"] == 0 and run["parse_failures"] == 0
    assert run["decoding"] == {"structured": True, "constrained": True, "mechanism": "grammar"}
    import sqlite3

    with sqlite3.connect(tmp_path / ".promptlab" / "promptlab.db") as db:
        parsed = [json.loads(p) for (p,) in db.execute("select parsed from results")]
    assert len(parsed) == 6
    for fields in parsed:
        assert set(fields) == {"score", "sentiment", "summary"}
        assert isinstance(fields["score"], float) and fields["sentiment"] in ("positive", "negative", "mixed")
        assert isinstance(fields["summary"], str) and fields["summary"]
