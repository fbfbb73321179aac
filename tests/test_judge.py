"""LLM-as-judge through the real litellm path against the loopback server.

The fake server picks its reply by substring of the LAST user message: the
judge's first question contains "## Rubric", its retries start with "That
reply was not usable" (see promptlab.providers.ask).
"""

import asyncio
import json

import pytest

from promptlab.config import ModelConfig
from promptlab.providers.gateway import Gateway
from promptlab.scorers import MetricContext, ScoreInput, ScoringError, get_metric
from promptlab.scorers.judge import judge_pair

SENTIMENT = [["great", "positive"], ["awful", "negative"]]
CASES = [{"text": f"great thing {i}", "label": "positive"} for i in range(3)] + \
        [{"text": "awful thing", "label": "negative"}]
GOOD_VERDICT = '{"reason": "It matches the reference.", "score": 4}'


def config(ws, **defaults):
    """promptlab.toml with the fake chat model, a fake embedding model and these [defaults]."""
    extra = "".join(f'{k} = "{v}"\n' for k, v in defaults.items())
    ws.write("promptlab.toml",
             f'[defaults]\nmodel = "fake"\n{extra}\n'
             f'[models.fake]\nmodel = "openai/fake"\napi_base = "{ws.fake.base_url}"\n\n'
             f'[models.fake-embed]\nmodel = "openai/fake-embed"\napi_base = "{ws.fake.base_url}"\n')


def setup(ws, rows=CASES):
    ws.sentiment_project(rows)


JUDGE = 'judge:{"rubric": "Is the label right?"}'


def judge_requests(ws):
    """Chat requests that were judge questions or retries (by content)."""
    return ws.fake.stats()["by_path"].get("/v1/chat/completions", 0)


def test_judge_scores_with_reason_through_the_configured_judge_model(workspace):
    config(workspace, judge_model="fake")
    setup(workspace)
    workspace.fake.configure(rules=[["## Rubric", GOOD_VERDICT], *SENTIMENT], record_bodies=True)
    result = workspace.cli("eval", "--prompt", "p", "--metric", JUDGE, "--metric", "exact_match", "--json")
    assert result.code == 0, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    assert (run["n"], run["errors"]) == (4, 0)
    assert run["scores"]["judge"] == pytest.approx(0.75)  # 4 on 1..5
    rows = workspace.rows("select scores, error_kind, passed from results")
    for scores, kind, passed in rows:
        judge = json.loads(scores)["judge"]
        assert judge["value"] == pytest.approx(0.75) and judge["passed"] is True
        assert judge["detail"]["reason"] == "It matches the reference." and judge["detail"]["judge_score"] == 4
        assert kind is None and passed == 1
    # 4 replies to grade + 4 judge questions; the judge saw the input, the reference and the output
    stats = workspace.fake.stats()
    assert stats["total"] == 8
    # each role's requests and tokens apart (issue 21): the judge's calls are not the task's
    roles = run["by_role"]
    assert (roles["task"]["requests"], roles["judge"]["requests"], run["provider_calls"]) == (4, 4, 8)
    assert roles["judge"]["prompt_tokens"] > roles["task"]["prompt_tokens"] > 0
    asked = [b["messages"][-1]["content"] for b in stats["bodies"] if "## Rubric" in b["messages"][-1]["content"]]
    assert len(asked) == 4
    awful = next(q for q in asked if "awful" in q)
    assert "## Task input\ntext: awful thing" in awful
    assert "## Reference answer" in awful and "\nnegative\n" in awful
    assert "## Response to grade\nnegative" in awful
    assert {b["temperature"] for b in stats["bodies"] if "## Rubric" in b["messages"][-1]["content"]} == {0}


def test_invalid_judge_reply_is_retried_then_the_item_is_an_error_with_the_reason(workspace):
    config(workspace, judge_model="fake")
    setup(workspace)
    workspace.fake.configure(rules=[["## Rubric", "Looks good to me!"],
                                    ["That reply was not usable", '{"reason": "fine", "score": 9}'],
                                    *SENTIMENT])
    result = workspace.cli("eval", "--prompt", "p", "--name", "r1", "--metric", JUDGE,
                           "--metric", "exact_match", "--json")
    # not a crash, but a run in which every item failed is a failed run (exit 3), never green
    assert result.code == 3, result.stderr
    assert "every item failed" in result.stderr
    run = json.loads(result.stdout)["runs"][0]
    assert (run["n"], run["errors"], run["status"]) == (4, 4, "failed")  # visible, not a silent 0
    assert run["scores"]["judge"] == 0.0 and run["scored"]["scores"]["judge"] is None  # every item counts, an error as 0
    rows = workspace.rows("select error_kind, error, scores, output, passed from results")
    assert len(rows) == 4
    for kind, error, scores, output, passed in rows:
        assert kind == "scorer" and passed == 0
        assert "no valid reply in 3 attempts" in error
        assert "the score must be between 1 and 5 (got 9)" in error  # the reason is kept
        scores = json.loads(scores)
        assert scores["judge"]["value"] is None and scores["judge"]["detail"]["reply"].startswith('{"reason"')
        assert scores["exact_match"]["value"] == 1.0  # the other metric still scored
        assert output in ("positive", "negative")
    # per item: one reply to grade + 3 judge attempts (each a distinct request)
    assert workspace.fake.stats()["total"] == 4 * (1 + 3)
    summary = json.loads(workspace.rows("select summary from runs where name = 'r1'")[0][0])
    assert summary["error_kinds"] == {"scorer": 4}


def test_summary_names_the_judge_model_and_counts_verdicts(workspace):
    config(workspace, judge_model="fake")
    setup(workspace)
    workspace.fake.configure(rules=[["## Rubric\nIs the label right?\n\n## Task input\ntext: awful",
                                     '{"reason": "wrong", "score": 1}'],
                                    ["## Rubric", GOOD_VERDICT], *SENTIMENT])
    result = workspace.cli("eval", "--prompt", "p", "--name", "s", "--metric", JUDGE, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(workspace.rows("select summary from runs where name = 's'")[0][0])["metrics"]["judge"]
    assert summary["judge_model"] == "fake" and summary["judge_scores"] == {"1": 1, "4": 3}
    assert summary["mean"] == pytest.approx((0 + 3 * 0.75) / 4) and summary["pass_rate"] == pytest.approx(0.75)


def test_a_retry_that_gives_valid_json_scores(workspace):
    config(workspace, judge_model="fake")
    setup(workspace)
    workspace.fake.configure(rules=[["## Rubric", "Score: 5/5"],
                                    ["That reply was not usable", '```json\n{"reason": "ok", "score": 2}\n```'],
                                    *SENTIMENT])
    result = workspace.cli("eval", "--prompt", "p", "--metric", JUDGE, "--json")
    assert result.code == 0, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    assert (run["errors"], run["scores"]["judge"]) == (0, pytest.approx(0.25))
    details = [json.loads(s)["judge"]["detail"] for (s,) in workspace.rows("select scores from results")]
    assert {d["attempts"] for d in details} == {2}


def test_rerun_with_judge_and_embedding_makes_no_new_model_call(workspace):
    config(workspace, judge_model="fake", embedding_model="fake-embed")
    setup(workspace)
    workspace.fake.configure(rules=[["## Rubric", GOOD_VERDICT], *SENTIMENT])
    metrics = ("--metric", JUDGE, "--metric", "embedding_similarity", "--metric", "exact_match")
    first = workspace.cli("eval", "--prompt", "p", *metrics, "--json")
    assert first.code == 0, first.stderr
    stats = workspace.fake.stats()
    assert stats["by_path"]["/v1/chat/completions"] == 8
    # outputs "positive"/"negative" and expected labels: 2 distinct texts, each embedded once
    assert stats["by_path"]["/v1/embeddings"] >= 1
    assert stats["models"].get("fake-embed", 0) >= 1
    before = stats["total"]
    again = workspace.cli("eval", "--prompt", "p", *metrics, "--json")
    assert again.code == 0, again.stderr
    assert workspace.fake.stats()["total"] == before  # no chat, judge or embedding call
    a, b = (json.loads(r.stdout)["runs"][0] for r in (first, again))
    assert a["scores"] == b["scores"] and b["cached"] == 4
    assert b["scores"]["embedding_similarity"] == pytest.approx(1.0)  # output == expected text


def test_unknown_judge_model_exits_2_before_anything_is_written(workspace):
    config(workspace)
    setup(workspace)
    runs = workspace.rows("select count(*) from runs")[0][0]
    result = workspace.cli("eval", "--prompt", "p", "--metric", 'judge:{"rubric": "x", "model": "nope"}')
    assert result.code == 2
    assert "unknown model 'nope'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert workspace.rows("select count(*) from runs")[0][0] == runs
    assert workspace.fake.requests_total() == 0


def test_failed_judge_call_is_an_item_error_not_a_crash(workspace):
    config(workspace, judge_model="fake")
    setup(workspace)
    workspace.fake.configure(rules=SENTIMENT, always_status_if_contains={"## Rubric": 400})
    result = workspace.cli("eval", "--prompt", "p", "--metric", JUDGE, "--json")
    assert result.code == 3, result.stderr  # every item failed: not a crash, and not green either
    run = json.loads(result.stdout)["runs"][0]
    assert run["errors"] == 4 and run["status"] == "failed"
    errors = {e for (e,) in workspace.rows("select error from results")}
    assert all("judge model call failed (bad_request" in e for e in errors)


# --------------------------------------------------------------------------- pairwise, direct


def fake_model(fake):
    return ModelConfig(alias="fake", model="openai/fake", api_base=fake.base_url)


def test_judge_pair_cancels_position_bias(fake_llm):
    model = fake_model(fake_llm)
    # a judge that always prefers whatever is shown first: the two orders disagree -> tie
    fake_llm.configure(default_reply='{"reason": "the first one", "winner": "1"}')
    verdict = asyncio.run(judge_pair(Gateway(), model, "Which is correct?", "Paris", "Lyon"))
    assert (verdict.winner, verdict.score, verdict.consistent) == ("tie", 0.5, False)
    assert fake_llm.stats()["total"] == 2  # both orders asked

    # a judge that recognises the right answer wherever it is shown
    fake_llm.configure(rules=[["## Response 1\nParis", '{"reason": "Paris is right", "winner": "1"}'],
                              ["## Response 2\nParis", '{"reason": "Paris is right", "winner": "second"}']])
    verdict = asyncio.run(judge_pair(Gateway(), model, "Which is correct?", "Lyon", "Paris"))
    assert (verdict.winner, verdict.score, verdict.consistent) == ("b", 1.0, True)
    assert verdict.reasons == ("Paris is right", "Paris is right")


def test_judge_pair_invalid_replies_raise_a_scoring_error(fake_llm):
    fake_llm.configure(default_reply="Response 1 is better.")
    with pytest.raises(ScoringError, match="no valid reply in 2 attempts"):
        asyncio.run(judge_pair(Gateway(), fake_model(fake_llm), "r", "a", "b", attempts=2))


def test_unbound_judge_is_a_scoring_error_and_args_are_checked():
    metric = get_metric({"name": "judge", "rubric": "r", "model": "openai/x"}, MetricContext())
    item = ScoreInput(output="x", parsed=None, parse_error=None, expected={}, inputs={})
    with pytest.raises(ScoringError, match="no model gateway"):
        asyncio.run(metric.score(item))
    from promptlab.scorers import MetricError

    for bad in ({"rubric": ""}, {"rubric": "r", "min_score": 5, "max_score": 5},
                {"rubric": "r", "threshold": 2}, {"rubric": "r", "context": 1}, {}):
        with pytest.raises(MetricError):
            get_metric({"name": "judge", **bad})
