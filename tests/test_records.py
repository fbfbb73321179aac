"""The store reads back the records it was given: runs, results, optimizations with their history.

Each record is built once from its row (JSON columns decoded there); what a writer stored, a
reader gets back equal, typed, and frozen.
"""

import dataclasses

import pytest

from promptlab.store import runs as store_runs
from promptlab.errors import StorageError
from promptlab.models import Case, ItemResult, PromptContent
from promptlab.store.records import (CandidateRecord, CandidateStep, EvalStep, Note, Optimization, Result, Run,
                               Score)
from promptlab.store import open_store


@pytest.fixture
def store(tmp_path):
    store = open_store(tmp_path / "records.db")
    project_id = store.ensure_project("demo")
    store.add_cases(project_id, [Case(inputs={"text": "fine"}, expected={"label": "positive"}),
                                 Case(inputs={"text": "bad"}, expected={"label": "negative"})])
    yield store
    store.db.conn.close()


def _prompt(store):
    return store.add_prompt(1, "p", PromptContent(template="Review: {{ text }}"))


def test_a_run_and_its_results_read_back_as_written(store, monkeypatch):
    prompt = _prompt(store)
    [a, b] = [c.id for c in store.cases(1)]
    run_id = store.create_run(1, "r1", prompt, model="fake", model_name="openai/fake", params={"temperature": 0},
                              metrics=[{"name": "exact_match"}], case_ids=[a, b], repeat=1, concurrency=2)
    written = [
        ItemResult(run_id, a, 0, output='{"label": "positive"}', parsed={"label": "positive"},
                   scores={"exact_match": {"value": 1.0, "passed": True, "detail": {"predicted": "positive"}}},
                   score=1.0, passed=True, latency_ms=12.5, prompt_tokens=9, completion_tokens=3, cost=0.001,
                   attempts=1),
        ItemResult(run_id, b, 0, error_kind="timeout", error="no reply in 30 s", attempts=3)]
    store.save_results([r.row() | {"created_at": "2026-01-01T00:00:00"} for r in written])
    store.update_run(run_id, status="completed", summary={"n": 2, "metrics": {"exact_match": {"mean": 0.5}}})

    decoded, loads = [], store_runs.loads

    def counting(text, default=None):
        decoded.append(text)
        return loads(text, default)

    monkeypatch.setattr(store_runs, "loads", counting)
    run = store.run(1, "r1")
    assert len(decoded) == 5  # params, metrics, case ids, summary, role usage: once each, when the record is built
    assert isinstance(run, Run) and (run.params, run.metrics, run.case_ids) == (
        {"temperature": 0}, [{"name": "exact_match"}], [a, b])
    assert run.summary == {"n": 2, "metrics": {"exact_match": {"mean": 0.5}}} and run.status == "completed"
    assert store.run_by_id(run_id) == run == store.find_run(1, "r1")

    results = store.results(run_id)
    assert [r.case_id for r in results] == [a, b]
    first, second = results
    assert first == Result(
        id=first.id, run_id=run_id, case_id=a, repeat=0, output='{"label": "positive"}',
        parsed={"label": "positive"}, parse_error=None,
        scores={"exact_match": Score(1.0, True, {"predicted": "positive"})}, score=1.0, passed=True,
        error_kind=None, error=None, latency_ms=12.5, prompt_tokens=9, completion_tokens=3, cost=0.001,
        cached=False, attempts=1, created_at="2026-01-01T00:00:00",
        expected={"label": "positive"})  # the case's expected output, kept with the result it scored
    assert first.value("exact_match") == 1.0 and first.value("fuzzy") is None
    assert (second.scores, second.parsed, second.passed, second.error_kind) == ({}, None, False, "timeout")
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.passed = False


def test_an_optimization_reads_back_the_steps_and_records_search_wrote(store):
    prompt = _prompt(store)
    opt_id = store.create_optimization(1, "o", "iterative", config={"seed": 3}, base_prompt_id=prompt.id,
                                       splits={"train": [1], "val": [2]}, budget={"calls": 40})
    history = (CandidateStep(0, prompt.id, "p@1", None, "base"),
               EvalStep(0, "p@1", "val", 1, 0.5, None, 0.5, 1),
               Note("proposer", 1, {"operator": "rewrite", "ok": False, "reason": "bad JSON"}),
               Note("dedup", 1, {"ref": "p@1", "reward": 0.5}))
    record = CandidateRecord(prompt_id=prompt.id, ref="p@1", parent_id=None, operator="base", iteration=0,
                             val=0.5, train=None, val_estimate=0.5, n_val=1, tokens=7)
    store.update_optimization(opt_id, history=history, status="completed", winner_prompt_id=prompt.id,
                              report={"stopped": "done", "candidates": [record.as_dict()]})

    opt = store.find_optimization(1, "o")
    assert isinstance(opt, Optimization) and opt == store.optimization_by_id(opt_id) == store.optimizations(1)[0]
    assert opt.history == history and opt.candidates == (record,)
    assert (opt.config, opt.splits, opt.budget, opt.status) == (
        {"seed": 3}, {"train": [1], "val": [2]}, {"calls": 40}, "completed")
    assert opt.report["stopped"] == "done"


def test_a_note_naming_a_candidate_stays_in_the_log(store):
    """A note carrying a `ref` (reflect's gate, mcts' dedup) is a log line, not a candidate's score."""
    from promptlab.reports.facts import optimization_facts

    prompt = _prompt(store)
    opt_id = store.create_optimization(1, "o", "mcts", config={}, base_prompt_id=prompt.id, splits={},
                                       budget={})
    store.update_optimization(opt_id, history=[CandidateStep(0, prompt.id, "p@1", None, "base"),
                                               Note("dedup", 1, {"ref": "p@1", "reward": 0.5})])
    facts = optimization_facts(store, 1, store.find_optimization(1, "o"))
    assert facts["events"] == [{"event": "dedup", "iteration": 1, "ref": "p@1", "reward": 0.5}]
    assert [(c["ref"], c["val"]) for c in facts["candidates"]] == [("p@1", None)]


def test_a_report_candidate_in_another_shape_is_an_error(store):
    prompt = _prompt(store)
    opt_id = store.create_optimization(1, "o", "iterative", config={}, base_prompt_id=prompt.id, splits={},
                                       budget={})
    store.update_optimization(opt_id, report={"candidates": [{"prompt": prompt.id, "score": 0.5}]})
    with pytest.raises(StorageError, match="optimization 'o' has a report promptlab never writes"):
        store.find_optimization(1, "o")
