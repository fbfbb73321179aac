"""OpenTelemetry traces of evaluations: one trace per run, one span per item (the `traces` extra).

On when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, or
`[traces] endpoint` in promptlab.toml; otherwise `traced` hands the progress back untouched and
nothing of OpenTelemetry is imported. Spans are exported by the SDK's OTLP/HTTP exporter, so
Langfuse, Jaeger, Tempo, Honeycomb… read them as they are.

The spans are made from the one progress protocol (a `Progress` that forwards every event):
`EvalStarted` opens a root span per run, each `ItemFinished` becomes a child span that ends when
the item did and began its latency earlier, `EvalFinished` ends the runs' spans. A span carries
the model, tokens, cost, latency, cache hit, score and error kind of its item, never a message,
a reply or a key.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from promptlab.errors import UsageError
from promptlab.progress import EvalFinished, EvalStarted, ItemFinished, RunTotal

if TYPE_CHECKING:
    from promptlab.config import Settings
    from promptlab.progress import Event, Progress

EXTRA_HINT = "traces need the traces extra: pip install 'promptlab[traces]'"
ENV_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
QUEUE = 65_536  # spans held for export: a cached run of tens of thousands of items ends in seconds


def enabled(settings: Settings) -> bool:
    return bool(settings.traces.endpoint or any(os.environ.get(v) for v in ENV_VARS))


@contextmanager
def traced(progress: Progress, settings: Settings) -> Iterator[Progress]:
    """`progress`, exporting a trace per run while the block runs when traces are configured."""
    if not enabled(settings):
        yield progress
        return
    tracer = _RunTracer(progress, _provider(settings))
    try:
        yield tracer
    finally:
        tracer.close()


def _provider(settings: Settings) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:  # configured, but the extra is missing: say so before any call
        raise UsageError(EXTRA_HINT) from None
    _quiet_sdk_logs()
    # the environment's endpoint is a base URL the exporter completes itself; the file's likewise
    endpoint = None if any(os.environ.get(v) for v in ENV_VARS) else \
        settings.traces.endpoint.rstrip("/") + "/v1/traces"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.traces.service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint),
                                                   max_queue_size=QUEUE, max_export_batch_size=512))
    return provider


def _quiet_sdk_logs() -> None:
    """An endpoint that is down costs the traces, not the run: the SDK's complaint is one warning line."""
    log = logging.getLogger("opentelemetry")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("promptlab: warning: traces: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
        log.setLevel(logging.WARNING)


class _RunTracer:
    def __init__(self, inner: Progress, provider: Any):
        from opentelemetry import trace

        self._inner, self._provider = inner, provider
        self._trace = trace
        self._tracer = provider.get_tracer("promptlab")
        self._runs: dict[int, tuple[Any, Any, str]] = {}  # run id -> (span, its context, model)

    def emit(self, event: Event) -> None:
        if isinstance(event, EvalStarted):
            for total in event.runs:
                if total.run_id not in self._runs:
                    self._open(total)
        elif isinstance(event, ItemFinished):
            self._item(event.item)
        elif isinstance(event, EvalFinished):
            self._end_runs()
        self._inner.emit(event)

    def _open(self, run: RunTotal) -> None:
        from opentelemetry.context import Context

        span = self._tracer.start_span(f"run {run.name}", context=Context(), attributes={  # a trace's root
            "promptlab.run.id": run.run_id, "promptlab.run.name": run.name, "promptlab.run.label": run.label,
            "gen_ai.request.model": run.model})
        self._runs[run.run_id] = (span, self._trace.set_span_in_context(span), run.model)

    def _item(self, item: Any) -> None:
        from opentelemetry.trace import Status, StatusCode

        if item.run_id not in self._runs:  # an item of a run this process did not see start
            self._open(RunTotal(item.run_id, "", 0))
        _, context, model = self._runs[item.run_id]
        end = time.time_ns()
        attributes = {
            "promptlab.run.id": item.run_id, "promptlab.case.id": item.case_id,
            "promptlab.repeat": item.repeat, "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": item.prompt_tokens, "gen_ai.usage.output_tokens": item.completion_tokens,
            "promptlab.latency_ms": float(item.latency_ms), "promptlab.cache_hit": bool(item.cached),
            "promptlab.passed": bool(item.passed), "promptlab.attempts": item.attempts}
        if item.cost is not None:
            attributes["promptlab.cost_usd"] = float(item.cost)
        if item.score is not None:
            attributes["promptlab.score"] = float(item.score)
        if item.error_kind:
            attributes["error.type"] = item.error_kind
        span = self._tracer.start_span("item", context=context, attributes=attributes,
                                       start_time=end - int(max(item.latency_ms, 0.0) * 1e6))
        if item.error_kind:
            span.set_status(Status(StatusCode.ERROR, item.error_kind))
        span.end(end_time=end)

    def _end_runs(self) -> None:
        for span, _, _ in self._runs.values():
            span.end()
        self._runs.clear()

    def close(self) -> None:
        self._end_runs()
        self._provider.shutdown()  # flushes what is queued
