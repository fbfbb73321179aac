"""The evaluation that drives the executors: each planned run is answered per call or through the
provider's Batch API (two strategies of one `Executor`, evaluation/executor.py), and their
outcomes are merged for `summary.finish` to record.

    plan.py      plans and jobs          per_call.py / batch.py   the executors
    runner.py    reply → parsed → scored sink.py                  results into the store
    summary.py   how each run ended      embeddings.py            a demo selector's vectors
"""

from __future__ import annotations

from promptlab.config import Concurrency, Settings
from promptlab.evaluation.batch import Batch
from promptlab.evaluation.per_call import PerCall
from promptlab.evaluation.plan import RunPlan
from promptlab.evaluation.runner import Outcome
from promptlab.progress import Progress
from promptlab.providers.gateway import Gateway
from promptlab.store import Store


async def execute(store: Store, settings: Settings, plans: list[RunPlan], progress: Progress, *,
                  gateways: tuple[Gateway, Gateway], batch: frozenset[int], concurrency: Concurrency,
                  use_cache: bool, wait: bool) -> Outcome:
    """The per-call runs, then the batched ones (`batch`: their run ids), each executor with its own
    of the two `gateways` (the caller reads what they spent). `wait`: False leaves batch runs
    `submitted`, their batches at the provider."""
    calls = [p for p in plans if p.run_id not in batch]
    batched = [p for p in plans if p.run_id in batch]
    outcome = Outcome({})
    if calls:
        outcome = await PerCall(concurrency, use_cache, settings).execute(store, gateways[0], calls, progress)
    if batched:
        more = await Batch(settings.batch, use_cache, wait).execute(store, gateways[1], batched, progress)
        outcome.states.update(more.states)
    return outcome
