"""OpenTelemetry traces: with an OTLP endpoint configured, an eval exports one trace per run with
a span per item; without one, nothing of OpenTelemetry is imported and nothing is sent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.hook_server import start_hook
from tests.seeing import evaluate, rules, setup_project
from tests.test_optimizers import optimize, world


@pytest.fixture
def receiver():
    hook, server = start_hook()
    yield hook
    server.shutdown()


def spans(hook) -> list:
    out = []
    for method, path, headers, body in hook.requests:
        assert (method, path, headers["content-type"]) == ("POST", "/v1/traces", "application/x-protobuf")
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        out += [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    return out


def attrs(span) -> dict:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


def test_a_20_case_eval_exports_one_trace_with_20_item_spans(workspace, receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-trace-secret-123456")
    setup_project(workspace, n=20, second=False)
    workspace.fake.configure(rules=rules(broken=[3], prefix="Review: "))
    evaluate(workspace, "p@1", "r1")
    found = spans(receiver)
    roots = [s for s in found if not s.parent_span_id]
    items = [s for s in found if s.parent_span_id]
    assert len(roots) == 1 and len(items) == 20
    assert {s.trace_id for s in found} == {roots[0].trace_id}  # one trace
    assert all(s.parent_span_id == roots[0].span_id for s in items)
    root = attrs(roots[0])
    assert root["promptlab.run.name"] == "r1" and root["gen_ai.request.model"] == "openai/fake"
    first = attrs(items[0])
    assert first["gen_ai.usage.input_tokens"] > 0 and first["gen_ai.usage.output_tokens"] > 0
    assert {"promptlab.latency_ms", "promptlab.cache_hit", "promptlab.case.id"} <= set(first)
    assert sum(not attrs(s)["promptlab.passed"] for s in items) == 1
    assert all(s.start_time_unix_nano <= s.end_time_unix_nano for s in found)
    assert b"sk-trace-secret" not in b"".join(r[3] for r in receiver.requests)

    receiver.requests.clear()  # a re-run is served from the cache: its spans say so
    evaluate(workspace, "p@1", "r2")
    assert all(attrs(s)["promptlab.cache_hit"] for s in spans(receiver) if s.parent_span_id)


def test_the_config_file_names_the_endpoint_and_errors_are_marked(workspace, receiver, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    with open(workspace.root / "promptlab.toml", "a") as toml:
        toml.write(f'\n[traces]\nendpoint = "{receiver.url}"\nservice_name = "lab-ci"\n')
    setup_project(workspace, n=4, second=False)
    workspace.fake.configure(rules=rules(prefix="Review: "), always_status_if_contains={"case-01": 400})
    evaluate(workspace, "p@1", "r1")
    items = [s for s in spans(receiver) if s.parent_span_id]
    assert len(items) == 4
    failed = [attrs(s) for s in items if s.status.code == 2]  # STATUS_CODE_ERROR
    assert len(failed) == 1 and failed[0]["error.type"]
    request = ExportTraceServiceRequest()
    request.ParseFromString(receiver.requests[0][3])
    resource = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "lab-ci"


def test_an_optimization_exports_a_trace_per_run(workspace, receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    world(workspace)
    result, data = optimize(workspace, "--strategy", "iterative", "--budget-calls", "80", "--seed", "1")
    assert result.code == 0, result.stderr
    found = spans(receiver)
    roots = [s for s in found if not s.parent_span_id]
    runs = workspace.rows("select count(*) from runs")[0][0]
    assert len({s.trace_id for s in roots}) == len(roots) >= 2
    assert len(roots) <= runs
    results = workspace.rows("select count(*) from results")[0][0]
    assert len(found) - len(roots) == results


def test_without_an_endpoint_nothing_is_imported_or_sent(workspace, receiver):
    setup_project(workspace, n=3, second=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    script = ("import sys\nfrom promptlab.cli import main\ntry:\n    main(['eval', '--prompt', 'p@1', '--name', 'q', "
              "'--progress', 'none'])\nexcept SystemExit as e:\n    code = e.code\n"
              "print(code, any(m.startswith('opentelemetry') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], cwd=workspace.root, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[-2:] == ["0", "False"]
    assert receiver.requests == []


def test_an_endpoint_without_the_extra_is_exit_2_before_any_call(workspace, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    setup_project(workspace, n=3, second=False)
    result = workspace.cli("eval", "--prompt", "p@1", "--name", "r1")
    assert result.code == 2 and "promptlab[traces]" in result.stderr
    assert workspace.fake.stats()["by_path"].get("/v1/chat/completions", 0) == 0
