"""The per-call executor: every item its own request through the gateway (bounded
concurrency, retries, cache), the runs' heartbeat beating meanwhile."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from promptlab.config import AUTO, Concurrency, Settings
from promptlab.evaluation.embeddings import embed_demo_texts
from promptlab.evaluation.plan import RunPlan, bind_metrics, pending_jobs
from promptlab.evaluation.runner import Outcome, evaluate
from promptlab.evaluation.sink import StoreSink
from promptlab.progress import Progress
from promptlab.providers.gateway import AUTO_CEILING, Gateway
from promptlab.store import Store
from promptlab.store.lease import HEARTBEAT_S


@dataclass(frozen=True)
class PerCall:
    concurrency: Concurrency
    use_cache: bool
    settings: Settings

    async def execute(self, store: Store, gateway: Gateway, plans: list[RunPlan],
                      progress: Progress) -> Outcome:
        """Evaluate what the runs still need, beating their heartbeat meanwhile.

        A run keeps the cache choice it was made with (`--no-cache` holds on resume too). With
        concurrency "auto" the gateway's AIMD limits decide how many of AUTO_CEILING workers call.
        """
        concurrency = self.concurrency
        if concurrency == AUTO:
            gateway.adaptive, concurrency = True, AUTO_CEILING
        for plan in plans:  # what the run records (batch runs record theirs in Batch.execute)
            if store.run_by_id(plan.run_id).mode is None:
                store.update_run(plan.run_id, mode="call")
        sink = gateway.cache if isinstance(gateway.cache, StoreSink) else StoreSink(store)
        bind_metrics(plans, gateway)
        jobs, runs = pending_jobs(store, plans)
        await embed_demo_texts(gateway, plans, self.settings)
        run_ids = [p.run_id for p in plans]

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT_S)
                sink.beat(run_ids)

        beating = asyncio.create_task(heartbeat())
        try:
            return await evaluate(jobs, gateway, sink, progress, runs=runs, concurrency=concurrency,
                                  use_cache=self.use_cache and all(p.use_cache for p in plans),
                                  failure_threshold=self.settings.defaults.failure_threshold,
                                  failure_min_items=self.settings.defaults.failure_min_items)
        finally:
            beating.cancel()
            await gateway.aclose()
