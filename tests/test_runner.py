"""The runner on its own: jobs in, items to the sink and the progress, no server, no database."""

import asyncio

from promptlab.providers.gateway import Gateway
from promptlab.models import Case
from promptlab.progress import RunTotal, SilentProgress
from promptlab.evaluation.runner import Job, evaluate
from promptlab.scorers import get_metric
from tests.fake_model import rules_model


class ListSink:
    def __init__(self):
        self.items, self.closed = [], False

    def add(self, item):
        self.items.append(item)

    def check(self):
        pass

    def close(self):
        self.closed = True


def jobs(model, texts, metrics):
    for i, (text, label) in enumerate(texts):
        case = Case(id=i + 1, inputs={"text": text}, expected={"output": label})
        yield Job(run_id=1, case=case, repeat=0, messages=[{"role": "user", "content": f"Review: {text}"}],
                  model=model, params={}, signature=None, metrics=metrics)


def test_the_runner_scores_every_job_and_hands_each_item_to_the_sink():
    cases = [("great", "positive"), ("awful", "negative"), ("meh", "neutral")]
    with rules_model([["great", "positive"], ["awful", "positive"]], default="neutral") as model:
        sink = ListSink()
        outcome = asyncio.run(evaluate(jobs(model, cases, (get_metric("exact_match"),)), Gateway(), sink,
                                       SilentProgress(), runs=(RunTotal(1, "p × rules", 3),), concurrency=2))
    assert sorted(model.calls) == ["Review: awful", "Review: great", "Review: meh"]
    assert sink.closed and outcome.states[1].finished == 3 and not outcome.states[1].stopped
    passed = {item.case_id: item.passed for item in sink.items}
    assert passed == {1: True, 2: False, 3: True}


def test_a_run_whose_calls_keep_failing_is_stopped_and_its_other_jobs_skipped():
    import litellm

    refused = litellm.BadRequestError("no such thing", model="rules", llm_provider="openai")
    cases = [(f"bad {i}", "x") for i in range(10)]
    with rules_model([["bad", refused]]) as model:
        sink = ListSink()
        outcome = asyncio.run(evaluate(jobs(model, cases, (get_metric("exact_match"),)), Gateway(retries=0), sink,
                                       SilentProgress(), runs=(RunTotal(1, "p × rules", 10),), concurrency=1,
                                       failure_min_items=3))
    assert [item.error_kind for item in sink.items] == ["bad_request"] * 3
    assert len(model.calls) == 3
    assert outcome.states[1].stopped == "stopped: 3 of 3 items failed (threshold 50%)"
