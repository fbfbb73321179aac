"""Batch mode: a run's items through the provider's Batch API (LiteLLM's files + batches calls).

A batch outlives the process that submitted it: every batch is a row in `batches`
(provider batch id, files, status, the (case, repeat) each request answers), so any
later `promptlab runs wait` picks it up. Each round, per run:

1. every live batch is polled; a finished one (completed, expired, failed, cancelled)
   is ingested: its answers parsed, scored, cached under the per-call path's key, and
   committed together with the batch marked done (a kill before that commit ingests it
   again; a result is unique per item, so nothing is counted twice);
2. the items with neither a result nor a live batch (new ones, or those an expired or
   failed batch did not answer) are looked up in the response cache, and the rest are
   submitted, split by the provider's request and byte limits. The batch row is stored,
   and the run marked `submitted`, in the commit right after the create call returns.

A process killed after the provider accepted a batch and before that commit leaves a
batch the store does not know: every batch carries the run's name and creation time as
metadata, and each waiting process first lists the provider's batches and adopts those
(their items read back from their input files). Where the provider cannot list batches
that window stays open: their items would be submitted again (paid twice at worst, stored once).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from promptlab import safe_json
from promptlab.config import BatchConfig
from promptlab.errors import ProviderError
from promptlab.evaluation.plan import RunPlan, bind_metrics, job, pending_jobs
from promptlab.evaluation.sink import StoreSink
from promptlab.providers.batch_api import ENDPOINT, FILE_TIMEOUT_S, PROVIDERS, BatchClient, check, provider
from promptlab.store.lease import HEARTBEAT_S
from promptlab.providers.errors import CallError, classify, raise_if_cancelled
from promptlab.providers.gateway import MAX_REPLY_BYTES, Gateway, chat_key, message_text, too_large
from promptlab.providers.litellm_loader import litellm
from promptlab.models import Completion, ItemResult, Usage, token_counts
from promptlab.progress import EvalFinished, EvalStarted, ItemFinished, Note, Progress
from promptlab.redact import redact
from promptlab.evaluation.runner import Job, Outcome, RunState, render_failure, reply_item
from promptlab.store import Store, dumps, is_locked, now

FINISHED = ("completed", "failed", "expired", "cancelled")
STAGES = ("validating", "in_progress", "finalizing", "completed", "expired", "failed", "cancelled", "lost")
POLL_START_S = 1.0
READY_BATCH = 1000  # results committed this many at a time


def choose(mode: str, plans: list[RunPlan], store: Store, config: BatchConfig) -> set[int]:
    """The runs (ids) to evaluate through batches, recorded on each run: a run that has a mode
    already (one being resumed) keeps it, so its live batches are never also called per item.

    `batch`: all of them; `call`: none; `auto`: those with at least `config.auto_threshold`
    items still to do, on a model whose provider has a batch API."""
    chosen = set()
    for plan in plans:
        recorded = store.run_by_id(plan.run_id).mode
        if recorded:
            chosen |= {plan.run_id} if recorded == "batch" else set()
            continue
        if mode == "batch":
            check(plan.model)
        todo = len(plan.cases) * plan.repeat - len(store.done_keys(plan.run_id))
        if mode == "batch" or (mode == "auto" and todo >= config.auto_threshold
                               and provider(plan.model) in PROVIDERS):
            chosen.add(plan.run_id)
        store.update_run(plan.run_id, mode="batch" if plan.run_id in chosen else "call")
    return chosen


def live_batches(store: Store, run_id: int) -> list[dict]:
    """The run's batches not yet ingested (at the provider, or finished but not yet stored)."""
    return list(store.db["batches"].rows_where("run_id = ? and done = 0", [run_id], order_by="id"))


def cache_key(item: Job) -> str:
    """The response-cache key the per-call path (`Gateway.complete`) gives this request."""
    return chat_key(item.model, item.messages, {**item.model.params, **item.params}, item.repeat)


class _LineError(Exception):
    """A request a batch answered with an HTTP error, classified like a per-call failure."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status_code = status


@dataclass(frozen=True)
class Batch:
    config: BatchConfig
    use_cache: bool
    wait: bool

    async def execute(self, store: Store, gateway: Gateway, plans: list[RunPlan],
                      progress: Progress) -> Outcome:
        """Evaluate the runs through batches: ingest what finished, submit what is missing, and (with
        `wait`) poll every `config.poll_s` seconds until every item has a result.

        The gateway's retries apply to the files and batches calls; metrics that call a model
        (judge, embedding) score through it, per call."""
        batches = _Batches(store, self.config, gateway.retries, max(gateway.timeout, FILE_TIMEOUT_S), progress)
        bind_metrics(plans, gateway)
        _, runs = pending_jobs(store, plans)  # also readies each plan for `job` (e.g. its demo pool)
        progress.emit(EvalStarted(runs))
        try:
            for plan in plans:
                await batches.adopt(plan)
            while True:
                raise_if_cancelled()
                for plan in plans:
                    await batches.poll(plan)
                    await batches.submit(plan, self.use_cache and plan.use_cache)
                waiting = [p.run_id for p in plans if live_batches(store, p.run_id)]
                if not waiting or not self.wait:
                    break
                await batches.pause(waiting)
        finally:
            progress.emit(EvalFinished())
            if isinstance(gateway.cache, StoreSink):  # what the metrics' calls cached
                gateway.cache.close()
            await gateway.aclose()
        if isinstance(gateway.cache, StoreSink):
            gateway.cache.check()
        return Outcome(batches.states)


class _Batches:
    def __init__(self, store: Store, config: BatchConfig, retries: int, timeout: float, progress: Progress):
        self.store, self.config, self.progress = store, config, progress
        self.client = BatchClient(retries, timeout)
        self.states: dict[int, RunState] = {}
        self.changed, self.quiet = True, 0  # whether a batch moved this round; rounds since one did
        self.seen: dict[str, tuple] = {}  # batch id → (status, done, total) last reported

    def say(self, line: str) -> None:
        self.progress.emit(Note(line))

    # ---- one round ------------------------------------------------------------
    async def poll(self, plan: RunPlan) -> None:
        """Check the run's live batches; ingest the ones that finished."""
        for row in live_batches(self.store, plan.run_id):
            try:
                batch = await self.client.call(plan.model, "aretrieve_batch", batch_id=row["batch_id"])
            except CallError as exc:
                if exc.kind == "not_found":  # the provider forgot it (deleted?): its items go out again
                    await self.ingest(plan, row, SimpleNamespace(
                        status="lost", output_file_id=None, error_file_id=None, created_at=None,
                        errors={"data": [{"message": str(exc)}]}))
                    continue
                if not exc.transient:
                    raise ProviderError(f"run '{plan.name}': cannot check batch {row['batch_id']}: {exc}") from None
                self.say(f"{plan.name}: batch {row['batch_id']}: {exc}; checking again later")
                continue
            self.report(plan, row, batch)
            if batch.status in FINISHED and not _output_pending(batch):
                await self.ingest(plan, row, batch)
            elif batch.status != row["status"]:
                self.store.db["batches"].update(row["id"], {"status": batch.status, "updated_at": now()})

    def report(self, plan: RunPlan, row: dict, batch: Any) -> None:
        """A plain line when a batch changes, and where the run's batches stand."""
        counts = batch.request_counts
        state = (batch.status, getattr(counts, "completed", 0), getattr(counts, "total", row["n_items"]))
        if self.seen.get(row["batch_id"]) == state:
            return
        self.seen[row["batch_id"]] = state
        self.changed = True
        statuses = [batch.status if r["id"] == row["id"] else r["status"] for r in self.store.db["batches"]
                    .rows_where("run_id = ?", [plan.run_id], select="id, status")]
        tally = ", ".join(f"{statuses.count(s)} {s.replace('_', ' ')}" for s in STAGES if s in statuses)
        self.say(f"{plan.name}: batch {row['batch_id']} {batch.status} ({state[1]}/{state[2]}); "
                 f"batches: {len(statuses)} submitted, {tally}")

    async def ingest(self, plan: RunPlan, row: dict, batch: Any) -> None:
        """Store a finished batch's answers, a thousand at a time, then mark it done. A kill in
        between ingests it again (results are unique per item: the stored ones are kept). Items
        it left unanswered are submitted again, until they have been through `max_attempts` batches."""
        items = {cid: tuple(key) for cid, key in json.loads(row["items"]).items()}
        cases = {c.id: c for c in plan.cases}
        ended = (getattr(batch, f"{batch.status}_at", None) or time.time()) - (batch.created_at or time.time())
        answered, transient, unreadable = set(), {}, 0
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self.client.call(plan.model, "afile_content", file_id=file_id)
            results, cache_rows = [], []
            for raw in io.BytesIO(content.content):
                line = _json(raw)
                custom_id = line.get("custom_id") if isinstance(line, dict) else None
                key = items.get(custom_id) if isinstance(custom_id, str) else None
                unreadable += key is None and bool(raw.strip())
                if key is None or key in answered or key[0] not in cases:
                    continue
                result = await self.answer(plan, job(plan, cases[key[0]], key[1]), line,
                                           max(ended, 0) * 1000, cache_rows)
                if isinstance(result, CallError):
                    transient[key] = result
                elif result is not None:
                    results.append(result)
                    answered.add(key)
                if len(results) >= READY_BATCH:
                    self.save(plan, results, cache_rows)
                    results, cache_rows = [], []
            self.save(plan, results, cache_rows)
        if unreadable:  # provider output is data: a broken line is not a crash, its item is asked again
            self.say(f"{plan.name}: batch {row['batch_id']}: {unreadable} unreadable or unknown output lines")
        tries = self.attempts(plan.run_id)
        reason = _batch_error(batch) or f"batch {row['batch_id']} {batch.status}"
        given_up = []
        for key in set(items.values()) - answered:
            n = tries.get(key, 0) + 1
            if n >= self.config.max_attempts:  # given up: the last error, as the per-call path would
                last = transient.get(key)
                # a completed batch without a usable line for it answered badly; else the batch's fate
                kind = last.kind if last else "bad_response" if batch.status == "completed" else f"batch_{batch.status}"
                given_up.append(ItemResult(plan.run_id, key[0], key[1], error_kind=kind,
                                           error=f"no answer after {n} batches ({last or reason})", attempts=n))
        with self.store.db.atomic():
            self.save(plan, given_up)
            self.store.db["batches"].update(row["id"], {
                "status": batch.status, "output_file_id": batch.output_file_id,
                "error_file_id": batch.error_file_id, "done": 1, "updated_at": now(),
                "error": _batch_error(batch)})
        left = len(items) - len(answered)
        if left and batch.status != "completed":
            self.say(f"{plan.name}: batch {row['batch_id']} {batch.status} with {left} of {len(items)} "
                     f"items unanswered ({reason}); those are submitted again")

    async def answer(self, plan: RunPlan, item: Job, line: dict, latency_ms: float,
                     cache_rows: list[dict]) -> ItemResult | CallError | None:
        """One output line as the item's result; the transient error (429, 5xx…) or None (no
        answer) when it must be asked again."""
        status, body = _dig(line, "response", "status_code"), _dig(line, "response", "body")
        if not isinstance(status, int):
            return None
        if status != 200:
            error = classify(_LineError(status, str(_dig(body, "error", "message") or body)))  # cut after redaction
            if error.transient:
                return error
            return ItemResult(plan.run_id, item.case.id, item.repeat, error_kind=error.kind, error=str(error),
                              attempts=1, latency_ms=latency_ms)
        text = message_text(_dig(body, "choices", 0, "message"))
        text = redact(text) if isinstance(text, str) else None  # a reply echoing the key stores no key
        if text is None:  # not an empty answer: never scored as one, never cached
            return ItemResult(plan.run_id, item.case.id, item.repeat, error_kind="bad_response",
                              error=f"{plan.model.alias or plan.model.model}: reply has no content",
                              attempts=1, latency_ms=latency_ms)
        if len(text) > MAX_REPLY_BYTES:
            return ItemResult(plan.run_id, item.case.id, item.repeat, error_kind="reply_too_large",
                              error=str(too_large(MAX_REPLY_BYTES)), attempts=1, latency_ms=latency_ms)
        prompt, completion, warning = token_counts(*(_dig(body, "usage", k) for k in ("prompt_tokens",
                                                                                        "completion_tokens")))
        if warning is not None:
            self.say(f"{plan.name}: case {item.case.id}: {warning}")
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion,
                      cost=None if warning else self.client.cost(plan.model, prompt, completion))
        cache_rows.append({"key": cache_key(item), "kind": "chat", "model": plan.model.model,
                           "response": dumps({"text": text, "usage": usage.model_dump()}), "created_at": now()})
        return await reply_item(item, Completion(text=text, usage=usage, attempts=1, latency_ms=latency_ms))

    def attempts(self, run_id: int) -> dict[tuple[int, int], int]:
        """How many finished batches each item has been through."""
        tries: dict[tuple[int, int], int] = {}
        for row in self.store.db["batches"].rows_where("run_id = ? and done = 1", [run_id], select="items"):
            for key in json.loads(row["items"]).values():
                tries[tuple(key)] = tries.get(tuple(key), 0) + 1
        return tries

    async def submit(self, plan: RunPlan, use_cache: bool) -> None:
        """Cache hits become results; every other missing item goes out in batches, each one
        submitted as soon as it is full (so memory holds one batch's input at most)."""
        busy = {tuple(key) for row in live_batches(self.store, plan.run_id)
                for key in json.loads(row["items"]).values()}
        done = self.store.done_keys(plan.run_id)
        model = litellm().get_llm_provider(plan.model.model)[0]  # the name the provider knows
        ready: list[ItemResult] = []  # cache hits, and requests too large for any batch
        chunk: list[tuple[str, tuple[int, int], bytes]] = []  # custom_id, (case_id, repeat), input line
        size = 0
        for r in range(plan.repeat):
            for case in plan.cases:
                if (case.id, r) in done or (case.id, r) in busy:
                    continue
                item = job(plan, case, r)
                if item.render_error is not None:
                    ready.append(render_failure(item))
                    continue
                hit = self.store.cache_get(cache_key(item)) if use_cache else None
                if hit is not None:
                    ready.append(await reply_item(item, Completion(
                        text=hit["text"], usage=Usage(**hit["usage"]), cached=True, attempts=0)))
                    if len(ready) >= READY_BATCH:
                        self.save(plan, ready)
                        ready = []
                    continue
                custom_id = f"{case.id}-{r}"
                body = {"model": model, "messages": item.messages, **plan.model.params, **item.params}
                line = (json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body},
                                   ensure_ascii=False) + "\n").encode()
                if len(line) > self.config.max_bytes:
                    ready.append(ItemResult(plan.run_id, case.id, r, error_kind="too_large", error=(
                        f"the request is {len(line):,} bytes, over [batch] max_bytes "
                        f"({self.config.max_bytes:,}); evaluate this case per call")))
                    continue
                if chunk and (len(chunk) >= self.config.max_requests or size + len(line) > self.config.max_bytes):
                    await self.create(plan, chunk)
                    chunk, size = [], 0
                chunk.append((custom_id, (case.id, r), line))
                size += len(line)
        self.save(plan, ready)
        if chunk:
            await self.create(plan, chunk)

    def save(self, plan: RunPlan, results: list[ItemResult], cache_rows: list[dict] = ()) -> None:
        """Commit results (and the replies they cache), then count and show them."""
        if results or cache_rows:
            self.store.save_results([result.row() | {"created_at": now()} for result in results], cache_rows)
        state = self.states.setdefault(plan.run_id, RunState())
        for result in results:
            self.progress.emit(ItemFinished(result))
            state.finished += 1
            state.failed += result.error_kind is not None

    async def create(self, plan: RunPlan, chunk: list[tuple[str, tuple[int, int], bytes]]) -> None:
        """Upload one input file and create its batch; the batch row is the very next commit."""
        data = b"".join(line for _, _, line in chunk)
        try:
            upload = await self.client.call(plan.model, "acreate_file", file=("promptlab-batch.jsonl", data),
                                    purpose="batch", model=plan.model.model)
            batch = await self.client.call(plan.model, "acreate_batch", completion_window="24h", endpoint=ENDPOINT,
                                   input_file_id=upload.id, model=plan.model.model, metadata=self.tag(plan))
        except CallError as exc:
            raise ProviderError(f"run '{plan.name}': could not submit a batch: {exc}") from None
        # a kill before this commit leaves the batch to `adopt` (see the module doc)
        self.keep(plan, batch, {cid: list(key) for cid, key, _ in chunk})
        self.say(f"{plan.name}: submitted batch {batch.id} ({len(chunk)} requests, {len(data):,} bytes)")

    def keep(self, plan: RunPlan, batch: Any, items: dict[str, list[int]]) -> None:
        """Store a batch the provider holds, and mark its run `submitted`, in one commit."""
        with self.store.db.atomic():
            self.store.db["batches"].insert({
                "run_id": plan.run_id, "provider": provider(plan.model), "batch_id": batch.id,
                "input_file_id": batch.input_file_id, "status": batch.status or "validating",
                "items": dumps(items), "n_items": len(items), "done": 0, "created_at": now(),
                "updated_at": now()})
            self.store.update_run(plan.run_id, status="submitted")

    def tag(self, plan: RunPlan) -> dict[str, str]:
        """The metadata every batch of this run carries (how `adopt` recognises it)."""
        return {"promptlab_run": plan.name[:500], "promptlab_run_created": self.store.run_by_id(plan.run_id).created_at}

    async def adopt(self, plan: RunPlan) -> None:
        """Store the run's batches the provider holds and the store does not: a process killed
        between a create call and the commit that keeps it left them. Recognised by their metadata,
        their items read back from their input file; so they are waited for, never sent again.
        Providers that cannot list batches leave that window open (said once)."""
        tag, known = self.tag(plan), {row["batch_id"] for row in self.store.db["batches"].rows_where(
            "run_id = ?", [plan.run_id], select="batch_id")}
        since = datetime.fromisoformat(tag["promptlab_run_created"]).timestamp() - 60
        after, orphans = None, []
        while True:
            try:
                page = await self.client.call(plan.model, "alist_batches", limit=100, after=after)
            except CallError as exc:
                self.say(f"{plan.name}: cannot list the provider's batches ({exc}); a batch a killed process "
                         f"submitted but never stored would be submitted again")
                return
            data = list(getattr(page, "data", None) or [])
            orphans += [b for b in data if b.id not in known and all(
                _dig(b.metadata, k) == v for k, v in tag.items())]
            if not data or not getattr(page, "has_more", False) or (data[-1].created_at or 0) < since:
                break
            after = data[-1].id
        for batch in orphans:
            content = await self.client.call(plan.model, "afile_content", file_id=batch.input_file_id)
            items = {}
            for raw in io.BytesIO(content.content):
                line = _json(raw)
                custom_id = line.get("custom_id") if isinstance(line, dict) else None
                case_id, _, repeat = str(custom_id).partition("-")
                if case_id.isdigit() and repeat.isdigit():
                    items[custom_id] = [int(case_id), int(repeat)]
            self.keep(plan, batch, items)
            self.say(f"{plan.name}: found batch {batch.id} ({len(items)} requests), submitted by a process "
                     f"that ended before storing it")

    async def pause(self, run_ids: list[int]) -> None:
        """Wait before the next round, beating the runs' heartbeat meanwhile: one second after a
        change, doubling while nothing moves, up to `poll_s` (a quick batch is seen quickly, a
        day-long one is not polled more often than needed)."""
        self.quiet = 0 if self.changed else self.quiet + 1
        self.changed = False
        left = min(self.config.poll_s, POLL_START_S * 2 ** min(self.quiet, 16))
        while left > 0:
            step = min(left, HEARTBEAT_S)
            await asyncio.sleep(step)
            left -= step
            try:
                self.store.heartbeat("runs", run_ids)
            except Exception as exc:  # a busy database skips a beat; anything else is a real failure
                if not is_locked(exc):
                    raise


def _dig(value: Any, *path: str | int) -> Any:
    """value[path[0]][path[1]]…, None where the shape differs (provider output is data)."""
    for key in path:
        if isinstance(key, int):
            value = value[key] if isinstance(value, list) and len(value) > key else None
        else:
            value = value.get(key) if isinstance(value, dict) else None
    return value


def _json(raw: bytes) -> Any:
    """One output line's JSON; None when it is not JSON or nested past the bound (the item's error)."""
    try:
        return safe_json.loads(raw)
    except ValueError:
        return None


def _output_pending(batch: Any) -> bool:
    """A completed batch may name no output file for a moment before it is ready (OpenAI): ingesting
    it then would send every item again."""
    total = getattr(batch.request_counts, "total", 0) or 0
    return batch.status == "completed" and total > 0 and not batch.output_file_id and not batch.error_file_id


def _batch_error(batch: Any) -> str | None:
    """The provider's reason for a failed batch (its first error), if it gave one."""
    errors = getattr(batch, "errors", None)
    data = getattr(errors, "data", None) or (errors.get("data") if isinstance(errors, dict) else None) or []
    first = data[0] if data else None
    if first is None:
        return None
    message = getattr(first, "message", None) or (first.get("message") if isinstance(first, dict) else None)
    return redact(str(message))[:300] if message else None  # stored and printed: no key in it
