"""Embedding similarity: the math, the metric through the real litellm path, the local model."""

import asyncio
import importlib.util
import json
import math

import pytest

from promptlab.scorers import MetricContext, ScoreInput, get_metric
from promptlab.scorers.embedding import cosine
from tests.fake_openai import embed


def test_cosine():
    assert cosine([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 1]) == 0.0
    assert cosine([1, 0], [-1, 0]) == pytest.approx(-1.0)
    assert cosine([0, 0], [1, 1]) == 0.0  # a zero vector is "no similarity", not NaN
    with pytest.raises(ValueError):
        cosine([1, 2], [1, 2, 3])


def config(ws):
    ws.write("promptlab.toml",
             f'[defaults]\nmodel = "fake"\nembedding_model = "fake-embed"\n\n'
             f'[models.fake]\nmodel = "openai/fake"\napi_base = "{ws.fake.base_url}"\n\n'
             f'[models.fake-embed]\nmodel = "openai/fake-embed"\napi_base = "{ws.fake.base_url}"\n')


ANSWERS = [["capital of France", "Paris is the capital of France"],
           ["largest planet", "Saturn is big"],
           ["EMBEDFAIL", "this reply EMBEDFAIL breaks the embedding call"]]


def setup(ws, rows):
    config(ws)
    ws.write("cases.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    for args in (("project", "add", "qa"),
                 ("signature", "add", "qa", "--input", "question", "--output", "answer"),
                 ("case", "import", "cases.jsonl"),
                 ("prompt", "add", "p", "--signature", "qa", "--template", "Q: {{ question }}")):
        result = ws.cli(*args)
        assert result.code == 0, result.stderr
    ws.fake.configure(rules=ANSWERS, default_reply="")


def test_embedding_similarity_scores_runs_through_the_gateway(workspace):
    rows = [{"question": "What is the capital of France?", "answer": "The capital of France is Paris"},
            {"question": "What is the largest planet?", "answer": "Jupiter is the largest planet"},
            {"question": "Say nothing", "answer": "silence"},
            {"question": "Which largest planet has no answer?"}]  # no expected value
    setup(workspace, rows)
    result = workspace.cli("eval", "--prompt", "p", "--metric", 'embedding_similarity:{"threshold": 0.5}',
                           "--json")
    assert result.code == 0, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    assert (run["n"], run["errors"]) == (4, 0)
    scores = {json.loads(i)["question"]: json.loads(s)["embedding_similarity"]
              for i, s in workspace.rows("select c.inputs, r.scores from results r join cases c on c.id = r.case_id")}
    france = scores["What is the capital of France?"]
    want = sum(x * y for x, y in zip(embed("Paris is the capital of France"),
                                     embed("The capital of France is Paris")))
    assert france["value"] == pytest.approx(want) and want == pytest.approx(1.0)  # same words
    planet = scores["What is the largest planet?"]
    want = sum(x * y for x, y in zip(embed("Saturn is big"), embed("Jupiter is the largest planet")))
    assert planet["value"] == pytest.approx(want) and planet["passed"] is (want >= 0.5)
    assert scores["Say nothing"] == {"value": 0.0, "passed": False, "detail": {"reason": "the output is empty"}}
    assert scores["Which largest planet has no answer?"]["value"] is None  # unscored, not an item error
    stats = workspace.fake.stats()
    assert stats["models"]["fake-embed"] == 2  # one request per scored item: [output, expected]
    summary = json.loads(workspace.rows("select summary from runs")[0][0])["metrics"]["embedding_similarity"]
    assert (summary["n"], summary["errors"]) == (3, 1)


def test_failed_embedding_call_is_an_item_error(workspace):
    setup(workspace, [{"question": "EMBEDFAIL please", "answer": "fine"},
                      {"question": "capital of France?", "answer": "Paris"}])
    workspace.fake.configure(always_status_if_contains={"breaks the embedding": 400})
    result = workspace.cli("eval", "--prompt", "p", "--metric", "embedding_similarity", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["errors"] == 1
    (kind, error), = workspace.rows("select error_kind, error from results where error is not null")
    assert kind == "scorer" and "embedding call failed (bad_request" in error


def test_unknown_embedding_model_is_a_metric_error():
    from promptlab.scorers import MetricError

    with pytest.raises(MetricError, match="embedding model: unknown model 'nope'"):
        get_metric({"name": "embedding_similarity", "model": "nope"}, MetricContext())
    with pytest.raises(MetricError, match="threshold"):
        get_metric({"name": "embedding_similarity", "threshold": 3})


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_real_local_model_ranks_a_paraphrase_above_an_unrelated_text():
    from promptlab.providers.gateway import Gateway

    metric = get_metric({"name": "embedding_similarity", "model": "local"}, MetricContext())
    metric.bind(Gateway())

    def item(output):
        return ScoreInput(output=output, parsed={"answer": output}, parse_error=None,
                          expected={"answer": "The film was wonderful and moving."}, inputs={})

    async def both():
        return [await metric.score(item(t)) for t in ("A wonderful, moving film.", "The invoice is due on Friday.")]

    close, far = asyncio.run(both())
    assert -1 <= far.value < close.value <= 1 and not math.isnan(close.value)
