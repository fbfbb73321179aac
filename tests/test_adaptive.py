"""Concurrency "auto": AIMD limits that halve on 429s and creep up on success, shown in the live view."""

import asyncio
import json
import re
import sqlite3

from promptlab.config import ModelConfig
from promptlab.providers.gateway import AUTO_START, AdaptiveLimit, Gateway
from tests.test_runs import setup_project


def test_a_429_halves_the_limit_once_per_round_and_successes_grow_it():
    async def scenario():
        limit = AdaptiveLimit(start=8, ceiling=10)
        first, second = await limit.acquire(), await limit.acquire()
        await limit.release(first, "rate_limit")
        await limit.release(second, "rate_limit")  # sent before the cut: the same congestion
        assert limit.current == 4
        for _ in range(5):  # a round of successes at limit 4 or so: +1
            await limit.release(await limit.acquire(), "ok")
        assert limit.current == 5
        await limit.release(await limit.acquire(), "server")  # other errors leave it
        assert limit.current == 5
        for _ in range(200):
            await limit.release(await limit.acquire(), "ok")
        assert limit.current == 10  # never past the ceiling
        return limit.in_flight

    assert asyncio.run(scenario()) == 0


def test_the_limit_drops_after_429s_and_rises_after_successes(fake_llm, call_path):
    cfg = ModelConfig(alias="fake", model="openai/fake", api_base=fake_llm.base_url)
    gateway = Gateway(adaptive=True, retries=2, backoff_base=0.01)

    async def burst(prefix: str, n: int):
        return await asyncio.gather(*(gateway.complete(cfg, [{"role": "user", "content": f"{prefix} {i}"}])
                                      for i in range(n)), return_exceptions=True)

    async def scenario():
        fake_llm.configure(fail_first_n=100, fail_first_n_status=429, retry_after="0", default_reply="ok")
        refused = await burst("limited", 32)
        assert all(getattr(r, "kind", None) == "rate_limit" for r in refused)
        dropped, busiest = gateway.adaptive_limits()["fake"], fake_llm.stats()["max_inflight"]
        fake_llm.configure(fail_first_n=0)
        assert all(r.text == "ok" for r in await burst("fine", 300))
        return dropped, busiest, gateway.adaptive_limits()["fake"]

    dropped, busiest, risen = asyncio.run(scenario())
    assert busiest <= AUTO_START  # 32 calls at once, never more in flight than the limit allowed
    assert dropped == 1 and risen > 10  # halved down to one on 429s, then about +1 a round of successes
    assert fake_llm.stats()["by_status"]["429"] == 32 * 3


def test_eval_with_concurrency_auto_shows_the_limit_and_stores_it(workspace):
    setup_project(workspace, n=40)
    workspace.fake.configure(fail_first_n=1, fail_first_n_status=429, retry_after="0")
    result = workspace.cli("eval", "--prompt", "p", "--name", "r", "--concurrency", "auto", "--json")
    assert result.code == 0, result.stderr
    assert (json.loads(result.stdout)["runs"][0]["n"], json.loads(result.stdout)["runs"][0]["errors"]) == (40, 0)
    assert re.search(r"40/40 .* concurrency=\d+$", result.stderr, re.M), result.stderr  # the live view
    assert workspace.rows("select concurrency from runs") == [("auto",)]
    fixed = workspace.cli("eval", "--prompt", "p", "--concurrency", "4")
    assert fixed.code == 0 and "40/40" in fixed.stderr and "concurrency=" not in fixed.stderr
    with sqlite3.connect(workspace.db_path) as db:  # as if it had been cut short
        db.execute("delete from results where run_id = 1 and case_id > 30")
        db.execute("update runs set status = 'interrupted' where id = 1")
    resumed = workspace.cli("eval", "--resume", "r", "--no-cache")  # cached replies need no slot
    assert resumed.code == 0 and re.search(r"10/10 .* concurrency=\d+$", resumed.stderr, re.M), resumed.stderr


def test_concurrency_auto_in_the_config_and_bad_values(workspace):
    toml = (workspace.root / "promptlab.toml").read_text()
    workspace.write("promptlab.toml", toml.replace("[defaults]\n", '[defaults]\nconcurrency = "auto"\n'))
    setup_project(workspace, n=4)
    assert workspace.cli("eval", "--prompt", "p").code == 0
    assert workspace.rows("select concurrency from runs") == [("auto",)]
    bad = workspace.cli("eval", "--prompt", "p", "--concurrency", "lots")
    assert bad.code == 2 and "--concurrency must be a whole number of at least 1, or auto" in bad.stderr
    workspace.write("promptlab.toml", toml + 'concurrency = "fast"\n')
    bad = workspace.cli("eval", "--prompt", "p")
    assert bad.code == 2 and "models.fake.concurrency" in bad.stderr


def test_the_live_table_names_the_limit_only_under_auto():
    from rich.console import Console

    from promptlab.display.progress import RichProgress
    from promptlab.progress import ConcurrencyChanged, EvalStarted, RunTotal

    for limits, title in (({"fake": 12}, "evaluating p@1 × fake · concurrency 12"),
                          ({"a": 3, "b[red]": 1}, "evaluating p@1 × fake · concurrency a 3, b[red] 1"),
                          ({}, "evaluating p@1 × fake")):
        progress = RichProgress(console=Console(file=open("/dev/null", "w")))
        progress.emit(EvalStarted((RunTotal(1, "p@1 × fake", 10),)))
        progress.emit(ConcurrencyChanged(limits))
        console = Console(record=True, width=200, force_terminal=False)
        console.print(progress._table())
        assert console.export_text().splitlines()[0].strip() == title


def test_an_experiment_file_can_ask_for_auto(workspace):
    from tests.conftest import SENTIMENT_EXPERIMENT

    workspace.write("cases.jsonl", "".join(json.dumps({"text": f"great {i}", "label": "positive"}) + "\n"
                                           for i in range(6)))
    exp = workspace.write("exp.yaml", SENTIMENT_EXPERIMENT.replace("concurrency: 8", "concurrency: auto"))
    result = workspace.cli("run", exp, "--json")
    assert result.code == 0, result.stderr
    assert workspace.rows("select concurrency from runs") == [("auto",)]
    bad = workspace.cli("run", workspace.write("bad.yaml", SENTIMENT_EXPERIMENT.replace(
        "concurrency: 8", "concurrency: 0")))
    assert bad.code == 2 and "concurrency" in bad.stderr


def test_an_adaptive_limit_serves_one_event_loop_after_another():
    limit = AdaptiveLimit(start=1)

    async def two_at_once():  # the second waits for the first: the limit is 1
        async def one():
            sent_in = await limit.acquire()
            await asyncio.sleep(0.01)
            await limit.release(sent_in, "server")

        await asyncio.gather(one(), one())

    asyncio.run(two_at_once())
    asyncio.run(two_at_once())  # a new loop: no "bound to a different event loop"
    assert limit.in_flight == 0


def test_calls_waiting_for_an_adaptive_slot_never_overspend_the_call_budget(fake_llm):
    cfg = ModelConfig(alias="fake", model="openai/fake", api_base=fake_llm.base_url, concurrency="auto")
    fake_llm.configure(default_reply="ok", latency_ms=20)
    gateway = Gateway(max_calls=10)

    async def many():
        return await asyncio.gather(*(gateway.complete(cfg, [{"role": "user", "content": f"q {i}"}])
                                      for i in range(30)), return_exceptions=True)

    replies = asyncio.run(many())
    assert sum(getattr(r, "kind", None) == "budget" for r in replies) == 20
    assert gateway.calls == 10 and fake_llm.stats()["total"] == 10
