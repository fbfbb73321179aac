"""Per-input demos: a prompt version may carry a kNN demo selector instead of a fixed list.

The fake model's world (see tests/test_optimizers.py) answers "good …" with "positive" only if
"positive" appears in the conversation, "bad …" likewise with "negative". A fixed 1-shot prompt
names one label and gets half the cases; a 2-nearest selector shows, for every input, demos of
its own kind, so it gets them all.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from promptlab.models import Case, Demo, DemoSelector, PromptContent, content_hash
from promptlab.prompting.render import render_messages, select_demos
from tests.test_optimizers import SIGNATURE, chat_calls, optimize, world

POOL = [Case(id=i, inputs={"text": t}, expected={"label": l}) for i, (t, l) in enumerate([
    ("the pizza was good and hot", "positive"), ("the pizza was cold and bad", "negative"),
    ("a good film with a good cast", "positive"), ("bad acting in a bad film", "negative"),
    ("the pizza was good", "positive"), ("the film was good", "positive")], start=1)]


def _texts(demos) -> list[str]:
    return [d.inputs["text"] for d in demos]


def test_the_nearest_cases_are_the_demos_most_similar_last_and_never_the_input_itself():
    selector = DemoSelector(k=2, pool=(6, 5, 4, 3, 2, 1))
    assert selector.pool == (1, 2, 3, 4, 5, 6)           # the pool is a set of ids: one hash for one pool
    picked = select_demos(selector, POOL, {"text": "was the pizza good"}, SIGNATURE)
    # both hold every word of the input (token-set ratio 100): the tie goes to the lower case id,
    # which comes last, next to the question
    assert _texts(picked) == ["the pizza was good", "the pizza was good and hot"]
    assert picked[0].outputs == {"label": "positive"}
    # leave-one-out: a pool case is never its own demo, by id or by identical inputs
    own = select_demos(selector, POOL, {"text": "the pizza was good"}, SIGNATURE, case_id=5)
    assert "the pizza was good" not in _texts(own)
    twin = select_demos(selector, POOL, {"text": "the pizza was good"}, SIGNATURE, case_id=99)
    assert "the pizza was good" not in _texts(twin)
    # the same input picks the same demos every time, whatever order the pool comes in
    assert select_demos(selector, POOL[::-1], {"text": "was the pizza good"}, SIGNATURE) == picked


def test_a_balanced_selector_takes_the_nearest_of_each_label_in_turn():
    plain = select_demos(DemoSelector(k=2, pool=range(1, 7)), POOL, {"text": "a good film"}, SIGNATURE)
    balanced = select_demos(DemoSelector(k=2, pool=range(1, 7), balance=True), POOL, {"text": "a good film"},
                            SIGNATURE)
    assert [d.outputs["label"] for d in plain] == ["positive", "positive"]
    assert sorted(d.outputs["label"] for d in balanced) == ["negative", "positive"]


def test_a_selector_is_part_of_the_content_and_its_hash():
    knn = PromptContent(template="{{ text }}", demo_selector=DemoSelector(k=2, pool=(1, 2)))
    assert knn.hash() != knn.model_copy(update={"demo_selector": DemoSelector(k=3, pool=(1, 2))}).hash()
    assert knn.hash() != knn.model_copy(update={"demo_selector": DemoSelector(k=2, pool=(1, 3))}).hash()
    plain = PromptContent(template="{{ text }}")   # versions without a selector keep their old hash
    assert plain.hash() == content_hash({"system": "", "template": "{{ text }}", "demos": [], "params": {}})
    with pytest.raises(ValidationError, match="not both"):
        PromptContent(template="x", demos=(Demo(inputs={"text": "a"}, outputs={"label": "positive"}),),
                      demo_selector=DemoSelector(k=1, pool=(1,)))
    with pytest.raises(ValueError, match="pool resolver"):
        render_messages(knn, SIGNATURE, {"text": "a"})


def _knn_version(ws, k: int = 2) -> str:
    """clf@N carrying a kNN selector over every case of the world; returns its ref."""
    from promptlab.store import open_store

    store = open_store(ws.db_path)
    project_id = store.ensure_project("p")
    ids = [c.id for c in store.cases(project_id)]
    base = store.prompt(project_id, "clf@1")
    version = store.add_prompt(project_id, "clf", base.content.model_copy(
        update={"demo_selector": DemoSelector(k=k, pool=tuple(ids))}), signature_id=base.signature_id)
    again = store.prompt_by_id(version.id)
    assert again.content == version.content and again.content_hash == version.content.hash()
    store.db.close()
    return version.ref


def test_a_knn_version_renders_the_same_messages_on_every_run_and_is_shown(workspace):
    ws = workspace
    world(ws, n=6)
    ref = _knn_version(ws)
    ws.fake.configure(record_bodies=True)
    for name in ("a", "b"):
        result = ws.cli("eval", "--project", "p", "--prompt", ref, "--name", name, "--no-cache", "--json")
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["runs"][0]["scores"]["exact_match"] == 1.0
    bodies = [json.dumps(b["messages"], sort_keys=True) for b in ws.fake.stats()["bodies"]]
    assert len(bodies) == 24 and len(set(bodies)) == 12          # each input: the same messages twice
    first = json.loads(bodies[0])
    assert len(first) == 1 + 2 * 2 + 1                            # system, two demos, the input
    assert first[-1]["content"] not in [m["content"] for m in first[1:-1]]   # never its own demo

    shown = ws.cli("prompt", "show", ref, "--project", "p")
    assert shown.code == 0 and '# demo selector\n{"balance": false, "k": 2, "kind": "knn"' in shown.stdout
    diff = ws.cli("prompt", "diff", "clf@1", ref, "--project", "p")
    assert '+# demo selector' in diff.stdout and "+pool: 12 cases" in diff.stdout


def test_the_search_tries_knn_demos_and_resume_of_it_sends_nothing(workspace):
    ws = workspace
    world(ws, n=8)
    # only a demo of the input's own kind helps: a fixed 1-shot gets half, 1-nearest gets all
    result, data = optimize(ws, "--strategy", "bootstrap", "--budget-calls", "200", "--name", "k",
                            "--knob", "max_demos=1", "--knob", "min_demos=1", "--knob", "knn_rate=1.0",
                            "--knob", "use_proposer=false", "--knob", "format_rate=0")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["naive"]["val"] < 1.0 and report["winner"]["val"] == 1.0 == report["winner"]["test"]
    winner = ws.rows("select demo_selector from prompts where id = ?", (report["winner"]["prompt_id"],))[0][0]
    assert json.loads(winner)["kind"] == "knn" and json.loads(winner)["k"] == 1

    # the same optimization, its runs gone but the response cache kept: a resume renders every
    # kNN prompt exactly as before, so every reply comes from the cache
    calls = chat_calls(ws)
    opt_id = ws.rows("select id from optimizations where name = 'k'")[0][0]
    import sqlite3
    with sqlite3.connect(ws.db_path) as conn:
        conn.execute("delete from results where run_id in (select id from runs where optimization_id = ?)",
                     (opt_id,))
        conn.execute("delete from runs where optimization_id = ?", (opt_id,))
        conn.execute("update optimizations set status = 'interrupted', report = null where id = ?", (opt_id,))
    again = ws.cli("optimize", "--project", "p", "--resume", "k", "--json")
    assert again.code == 0, again.stderr
    resumed = json.loads(again.stdout)["optimization"]
    assert chat_calls(ws) == calls                                  # no new calls
    hashes = [ws.rows("select content_hash from prompts where id = ?", (r["winner"]["prompt_id"],))[0][0]
              for r in (report, resumed)]
    assert hashes[0] == hashes[1]                                   # the same winner
    assert resumed["spent"]["calls"] == report["spent"]["calls"]


# ---- similarity by embeddings, through the gateway ---------------------------------------------
def test_an_embedding_selector_ranks_by_cosine_and_needs_the_vectors():
    selector = DemoSelector(k=1, pool=(1, 2, 3), similarity="embedding", embedding_model="emb")
    vectors = {"q": [1.0, 0.0], "the pizza was good and hot": [0.0, 1.0], "the pizza was cold and bad": [0.6, 0.8],
               "a good film with a good cast": [0.6, 0.8]}
    picked = select_demos(selector, POOL[:3], {"text": "q"}, SIGNATURE, vectors=vectors)
    assert _texts(picked) == ["the pizza was cold and bad"]       # cosine 0.6 twice: the lower case id
    with pytest.raises(ValueError, match="vectors"):
        select_demos(selector, POOL[:3], {"text": "q"}, SIGNATURE, vectors={"q": [1.0, 0.0]})
    with pytest.raises(ValidationError, match="embedding_model"):
        DemoSelector(k=1, pool=(1,), similarity="embedding")


def _with_embeddings(ws) -> None:
    config = ws.root / "promptlab.toml"
    config.write_text(config.read_text() + f'\n[models.fake-embed]\nmodel = "openai/fake-embed"\n'
                                           f'api_base = "{ws.fake.base_url}"\n')


def _embedding_calls(ws) -> int:
    return ws.fake.stats()["by_path"].get("/v1/embeddings", 0)


def _embedding_knn_version(ws) -> str:
    """clf@1 with a 2-nearest selector by embeddings (model fake-embed) over every case; its ref."""
    from promptlab.store import open_store

    store = open_store(ws.db_path)
    project_id = store.ensure_project("p")
    base = store.prompt(project_id, "clf@1")
    selector = DemoSelector(k=2, pool=tuple(c.id for c in store.cases(project_id)), similarity="embedding",
                            embedding_model="fake-embed")
    ref = store.add_prompt(project_id, "clf", base.content.model_copy(update={"demo_selector": selector}),
                           signature_id=base.signature_id).ref
    store.db.close()
    return ref


def test_an_embedding_knn_version_embeds_each_text_once_and_renders_the_same_messages(workspace):
    ws = workspace
    world(ws, n=4)
    _with_embeddings(ws)
    ref = _embedding_knn_version(ws)
    ws.fake.configure(record_bodies=True)
    for name in ("a", "b"):
        result = ws.cli("eval", "--project", "p", "--prompt", ref, "--name", name, "--no-cache", "--json")
        assert result.code == 0, result.stderr
    assert _embedding_calls(ws) == 8                     # the 8 case texts, once: the second run hit the cache
    chats = [json.dumps(b["messages"]) for b in ws.fake.stats()["bodies"] if "messages" in b]
    assert len(chats) == 16 and len(set(chats)) == 8     # the same messages on both runs


def test_an_optimization_with_embedding_selectors_counts_them_and_resumes_without_calls(workspace):
    ws = workspace
    world(ws, n=8)
    _with_embeddings(ws)
    result, data = optimize(ws, "--strategy", "bootstrap", "--budget-calls", "200", "--name", "e",
                            "--knob", "max_demos=1", "--knob", "knn_rate=1.0", "--knob", "use_proposer=false",
                            "--knob", "embedding_model=fake-embed")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    selectors = [json.loads(s) for (s,) in ws.rows("select demo_selector from prompts where demo_selector is not null")]
    assert selectors and all(s["similarity"] == "embedding" for s in selectors)
    sent = chat_calls(ws) + _embedding_calls(ws)
    assert sent == report["spent"]["provider_calls"] <= 200
    assert 0 < _embedding_calls(ws) <= 16                                      # each case's text once at most
    # the budget counts what the search needed, embeddings included (a chat reply another candidate
    # already got is a cache hit: needed, not sent)
    assert report["spent"]["calls"] + report["spent"]["test_calls"] >= sent

    import sqlite3
    opt_id = ws.rows("select id from optimizations where name = 'e'")[0][0]
    with sqlite3.connect(ws.db_path) as conn:   # runs gone, the response cache kept
        conn.execute("delete from results where run_id in (select id from runs where optimization_id = ?)",
                     (opt_id,))
        conn.execute("delete from runs where optimization_id = ?", (opt_id,))
        conn.execute("update optimizations set status = 'interrupted', report = null where id = ?", (opt_id,))
    again = ws.cli("optimize", "--project", "p", "--resume", "e", "--json")
    assert again.code == 0, again.stderr
    assert chat_calls(ws) + _embedding_calls(ws) == sent                      # no new calls of either kind
    assert json.loads(again.stdout)["optimization"]["spent"]["calls"] == report["spent"]["calls"]


def test_prompt_try_and_load_prompt_render_an_embedding_version_as_eval_sent_it(workspace):
    """Outside a run the selector still gets its vectors (through the same response cache), so
    `prompt try` and `load_prompt` pick the demos eval picked, and texts eval embedded cost nothing."""
    import promptlab

    ws = workspace
    world(ws, n=3)
    _with_embeddings(ws)
    ref = _embedding_knn_version(ws)
    ws.fake.configure(record_bodies=True)
    assert ws.cli("eval", "--project", "p", "--prompt", ref, "--name", "a", "--no-cache").code == 0
    sent = {b["messages"][-1]["content"]: b["messages"] for b in ws.fake.stats()["bodies"] if "messages" in b}
    embedded = _embedding_calls(ws)

    tried = ws.cli("prompt", "try", ref, "--project", "p", "-i", "text=good item 1", "--dry-run", "--json")
    assert tried.code == 0, tried.stderr
    assert json.loads(tried.stdout)["messages"] == sent["Review: good item 1"]
    loaded = promptlab.load_prompt(ref, project="p", db=ws.db_path)
    assert loaded.messages(text="bad item 2") == sent["Review: bad item 2"]
    assert _embedding_calls(ws) == embedded                      # every text came from the cache

    new = loaded.messages(text="good news")                       # a new text: embedded once, then cached
    assert _embedding_calls(ws) == embedded + 1
    assert loaded.messages(text="good news") == new and _embedding_calls(ws) == embedded + 1
    assert len(new) == 1 + 2 * 2 + 1                               # system, two demos, the input

    ws.fake.configure(require_api_key="sk-other")                  # a failing embedding model: one clear error
    failed = ws.cli("prompt", "try", ref, "--project", "p", "-i", "text=unseen words", "--dry-run")
    assert failed.code == 3 and "fake-embed: authentication failed" in failed.stderr, failed.stderr


# ---- demo selectors in experiment files ---------------------------------------------------------
KNN_EXPERIMENT = """\
project: knn
signature:
  name: clf
  instruction: Classify.
  inputs: [text]
  outputs:
    - {name: label, type: enum, choices: [positive, negative]}
prompts:
  - name: knn
    template: "Review: {{ text }}"
    demo_selector: {k: 1, pool: train}
models: [fake]
eval: {split: test}
cases:
  - {inputs: {text: good item 0}, expected: {label: positive}, split: train}
  - {inputs: {text: bad item 0}, expected: {label: negative}, split: train}
  - {inputs: {text: good item 1}, expected: {label: positive}, split: test}
  - {inputs: {text: bad item 1}, expected: {label: negative}, split: test}
"""


def test_an_experiment_prompt_takes_a_demo_selector_over_a_split_and_export_reruns_it(workspace):
    from tests.test_optimizers import RULES

    ws = workspace
    ws.fake.configure(rules=RULES, default_reply="maybe")
    ws.write("knn.yaml", KNN_EXPERIMENT)
    result = ws.cli("run", "knn.yaml", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["scores"]["exact_match"] == 1.0   # a demo of its own kind
    train = {i for (i,) in ws.rows("select id from cases where split = 'train'")}
    (stored,) = ws.rows("select demo_selector from prompts where name = 'knn'")
    assert set(json.loads(stored[0])["pool"]) == train

    # prompt export writes an entry (pool as case ids) that recreates the same version
    exported = ws.cli("prompt", "export", "knn@1", "--project", "knn")
    assert exported.code == 0, exported.stderr
    again = KNN_EXPERIMENT.replace(KNN_EXPERIMENT[KNN_EXPERIMENT.index("prompts:"):KNN_EXPERIMENT.index("models:")],
                                   "prompts:\n" + "".join(f"  {line}\n" for line in exported.stdout.splitlines()))
    ws.write("again.yaml", again)
    rerun = ws.cli("run", "again.yaml")
    assert rerun.code == 0, rerun.stderr
    assert ws.rows("select count(*) from prompts where name = 'knn'")[0][0] == 1


@pytest.mark.parametrize("selector, expected", [
    ("{k: 1, pool: dev}", "prompts[0].demo_selector.pool: no case of split 'dev'"),
    ("{k: 1, pool: [9999]}", "demo_selector.pool: case 9999 is not in project"),
    ("{k: 1, pool: train, similarity: embedding}", "prompts[0].demo_selector: similarity 'embedding' needs"),
    ("{k: 1, pool: train, similarity: embedding, embedding_model: nope-model}", "demo_selector.embedding_model"),
    ("{k: 0, pool: train}", "demo_selector.k"),
])
def test_a_bad_demo_selector_in_an_experiment_is_one_line_and_writes_nothing(workspace, selector, expected):
    ws = workspace
    ws.write("bad.yaml", KNN_EXPERIMENT.replace("{k: 1, pool: train}", selector))
    result = ws.cli("run", "bad.yaml")
    assert result.code == 2 and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert ws.rows("select count(*) from prompts")[0][0] == 0 if ws.db_path.exists() else True


def test_an_experiment_prompt_with_demos_and_a_selector_is_refused(workspace):
    ws = workspace
    both = KNN_EXPERIMENT.replace("    demo_selector:", "    demos: [{inputs: {text: x}, outputs: {label: positive}}]\n"
                                                      "    demo_selector:")
    ws.write("both.yaml", both)
    result = ws.cli("run", "both.yaml")
    assert result.code == 2 and "fixed demos or a demo_selector, not both" in result.stderr
