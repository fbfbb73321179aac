"""The one progress protocol: what the runner and a search emit, and the displays that show it."""

import asyncio
import json
import sys

import pytest

from promptlab.progress import (EvalFinished, EvalStarted, ItemFinished, Note, RunTotal, SearchEvaluating,
                                SearchFinished, SearchStarted, SearchStatus, SearchStep)


class Recorder:
    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)

    def kinds(self) -> str:
        """The events as one letter each: S(earch started) E(valuating) [ (eval started) i(tem)
        ] (eval finished) s(tep) F(inished)."""
        letters = {SearchStarted: "S", SearchEvaluating: "E", EvalStarted: "[", ItemFinished: "i",
                   EvalFinished: "]", SearchStep: "s", SearchFinished: "F"}
        return "".join(letters[type(e)] for e in self.events)


def test_the_runner_reports_its_runs_then_each_item_then_the_end():
    from promptlab.providers.gateway import Gateway
    from promptlab.evaluation.runner import evaluate
    from promptlab.scorers import get_metric
    from tests.fake_model import rules_model
    from tests.test_runner import ListSink, jobs

    runs = (RunTotal(1, "p@1 × rules", 3),)
    with rules_model([["great", "positive"]], default="neutral") as model:
        progress = Recorder()
        asyncio.run(evaluate(jobs(model, [("great", "positive"), ("meh", "neutral"), ("awful", "negative")],
                                  (get_metric("exact_match"),)), Gateway(), ListSink(), progress, runs=runs,
                             concurrency=2))
    assert progress.kinds() == "[iii]"
    assert progress.events[0] == EvalStarted(runs) and progress.events[0].total == 3
    assert sorted(e.item.case_id for e in progress.events[1:4]) == [1, 2, 3]


def test_a_search_reports_each_batch_between_its_state_before_and_after(tmp_path):
    from promptlab.config import ModelConfig, Settings
    from promptlab.models import Case, PromptContent
    from promptlab.optimizers.base import Budget
    from promptlab.optimizers.optimize import OptimizeRequest, start
    from promptlab.store import open_store
    from tests.fake_model import rules_model
    from tests.test_optimizers import SIGNATURE

    store = open_store(tmp_path / "promptlab.db")
    project_id = store.ensure_project("p")
    signature_id = store.upsert_signature(project_id, SIGNATURE)
    store.add_prompt(project_id, "clf", PromptContent(template="Review: {{ text }}"), signature_id=signature_id)
    store.add_cases(project_id, [Case(inputs={"text": f"{word} item {i}"}, expected={"label": label})
                                 for i in range(6) for word, label in (("good", "positive"), ("bad", "negative"))])
    progress = Recorder()
    with rules_model([["good", "positive"], ["bad", "negative"]], default="maybe") as model:
        request = OptimizeRequest(name="o", strategy="iterative", prompt="clf@1", model="rules",
                                  budget=Budget(calls=200), knobs={"use_proposer": False})
        report = start(store, Settings(), project_id, request, progress=progress,
                       models={"rules": ModelConfig(alias="rules", model=model.model)})
    # the base, then naive k-shot on val (each batch: its state, the runner's events, the scores),
    # the stop, then the test split
    assert progress.kinds() == "SE[iiii]sE[iiii]ssE[iiiiii]F"
    steps = [e.status for e in progress.events if isinstance(e, SearchStep)]
    assert steps[-1].message.startswith(f"stopped: {report['stopped']}") and steps[-1].best_val == 1.0
    assert progress.events[0].title.startswith("optimize o: iterative on clf@1, budget 200 calls")


def stderr_events(text: str) -> list[dict]:
    lines = text.splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_json_progress_is_one_object_per_event_for_an_eval(workspace):
    workspace.sentiment_project([{"text": f"great {i}", "label": "positive"} for i in range(3)])
    result = workspace.cli("eval", "--prompt", "p", "--progress", "json", "--json")
    assert result.code == 0, result.stderr
    events = stderr_events(result.stderr)
    assert [e["event"] for e in events] == ["eval_started", *["item_finished"] * 3, "eval_finished"]
    assert events[0]["total"] == 3 and events[0]["runs"][0]["label"] == "p@1 × fake"
    assert {e["item"]["output"] for e in events[1:4]} == {"positive"}
    assert json.loads(result.stdout)["runs"][0]["n"] == 3  # stdout keeps the result


def test_json_progress_is_one_object_per_event_for_an_optimize(workspace):
    from tests.test_optimizers import optimize, world

    world(workspace, n=4)
    result, _ = optimize(workspace, "--strategy", "iterative", "--budget-calls", "100", "--name", "j",
                         "--knob", "use_proposer=false", "--progress", "json")
    assert result.code == 0, result.stderr
    kinds = [e["event"] for e in stderr_events(result.stderr)]
    assert kinds[:3] == ["search_started", "search_evaluating", "eval_started"] and kinds[-1] == "search_finished"
    assert {"item_finished", "eval_finished", "search_step"} <= set(kinds)


def test_plain_progress_keeps_its_lines(capsys):
    from promptlab.display.progress import PlainProgress
    from promptlab.evaluation.runner import ItemResult

    status = SearchStatus(strategy="genetic", iteration=2, best_ref="clf@3", best_val=0.5, base_val=0.25,
                          latest=(("clf@3", "rewrite", 0.5, None),), calls=20, budget_calls=100, tokens=900,
                          budget_tokens=None, candidates=3)
    plain = PlainProgress()
    for event in (Note("submitted batch b1"), SearchStarted("optimize o"), SearchEvaluating(status),
                  EvalStarted((RunTotal(1, "clf@3 × fake", 20),)),
                  *(ItemFinished(ItemResult(1, i, 0)) for i in range(20)), EvalFinished(), SearchStep(status),
                  SearchFinished(), EvalStarted((RunTotal(2, "clf@1 × fake", 1),)), ItemFinished(ItemResult(2, 1, 0))):
        plain.emit(event)
    line = "iter 2 | best clf@3 val=0.500 (base 0.250) | last clf@3 rewrite val=0.500 | calls 20/100 tokens 900"
    lines = capsys.readouterr().err.splitlines()
    assert lines[:5] == ["promptlab: submitted batch b1", "promptlab: optimize o",
                         f"{line} | evaluating 20 replies", f"{line} | evaluating: 10/20 replies", line]
    assert lines[5] == "promptlab: 1 items to evaluate"  # after the search, an eval is an eval again
    assert lines[6].startswith("clf@1 × fake: 1/1 pass=0.0%")


class Gone:
    """A stream whose every write fails: a closed pipe (EPIPE) or a terminal that went away (EIO)."""

    def __init__(self, errno: int):
        self.errno = errno

    def write(self, text):
        raise OSError(self.errno, "gone")

    def flush(self):
        raise OSError(self.errno, "gone")


@pytest.mark.parametrize("mode, errno", [("rich", 5), ("plain", 32), ("json", 32), ("plain", 5)])
def test_a_dead_stderr_turns_any_display_off(mode, errno, monkeypatch):
    from rich.console import Console

    from promptlab.display import progress as displays

    monkeypatch.setattr(sys, "stderr", Gone(errno))
    monkeypatch.setattr(displays, "err", Console(file=Gone(errno), force_terminal=True))
    shown = displays.make_progress(mode)
    shown.emit(EvalStarted((RunTotal(1, "p@1 × fake", 1),)))  # no exception: the display is off
    shown.emit(EvalFinished())
    assert shown.inner is None and not isinstance(sys.stderr, Gone)  # the dead stream is swapped


def test_a_progress_mode_that_is_unknown_or_contradicted_is_one_line(workspace):
    result = workspace.cli("eval", "--prompt", "p", "--progress", "loud")
    assert result.code == 2
    assert result.stderr.strip() == ("promptlab: error: --progress must be one of auto, rich, plain, json, "
                                     "none, not 'loud'")
    result = workspace.cli("optimize", "--prompt", "p", "--quiet", "--progress", "json")
    assert result.code == 2
    assert result.stderr.strip() == ("promptlab: error: optimize: --quiet is --progress none; drop one of "
                                     "--quiet and --progress json")
    assert not workspace.db_path.exists()  # refused before anything is written


def test_the_live_view_has_an_overall_eta_while_a_run_waits_and_fills_the_terminal():
    import io

    from rich.console import Console

    from promptlab.display.progress import RichProgress
    from promptlab.evaluation.runner import ItemResult

    console = Console(file=io.StringIO(), width=150, force_terminal=True, color_system=None)
    view = RichProgress(console)
    view.emit(EvalStarted((RunTotal(1, "p@1 × fake", 10), RunTotal(2, "p@1 × other", 10))))
    for i in range(4):  # the workers are on the first run; the second waits its turn
        view.emit(ItemFinished(ItemResult(1, i, 0)))
    console.print(view._table())
    view._stop()
    text = _plain(console.file.getvalue())
    title = [line for line in text.splitlines() if "evaluating 2 runs" in line][-1]
    assert "evaluating 2 runs · 4/20, ETA " in title and "ETA ?" not in title
    row = [line for line in text.splitlines() if "p@1 × other" in line][-1]
    assert "waiting" in row
    assert max(len(line) for line in text.splitlines()) == 150

    status = SearchStatus(strategy="genetic", iteration=1, best_ref="clf@3", best_val=0.5, base_val=0.25,
                          latest=(("clf@3", "rewrite", 0.5, None),), calls=20, budget_calls=100, tokens=900,
                          budget_tokens=None, candidates=3)
    wide = Console(file=io.StringIO(), width=150, force_terminal=True, color_system=None)
    search = RichProgress(wide)
    search.emit(SearchStarted("optimize o"))
    search.emit(SearchStep(status))
    wide.print(search._view())
    search._stop()
    assert max(len(line) for line in _plain(wide.file.getvalue()).splitlines()) == 150  # not ~38 of 150 columns


def _plain(text: str) -> str:
    """The terminal's text without its control sequences (the live view hides the cursor, moves up)."""
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_plain_lines_carry_the_overall_eta_with_several_runs(capsys):
    from promptlab.display.progress import PlainProgress
    from promptlab.evaluation.runner import ItemResult

    plain = PlainProgress(every_s=0)
    plain.emit(EvalStarted((RunTotal(1, "a", 2), RunTotal(2, "b", 2))))
    plain.emit(ItemFinished(ItemResult(1, 0, 0)))
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith("a: 1/2") and "| all runs 1/4, ETA " in line
