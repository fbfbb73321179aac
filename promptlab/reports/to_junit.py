"""Facts → JUnit XML: one testcase per case result, one per quality gate.

The common JUnit shape CI systems read: <testsuites> holding one <testsuite>
per run (name, tests, failures, errors, skipped, time, timestamp) of
<testcase classname= name= time=>; a failed case carries <failure> with the
expected and actual output, a case that ended in an error carries <error>.
Gates go in their own suite. Characters XML 1.0 forbids are dropped.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
import uuid
from typing import Any, Iterator

_INVALID_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
MAX_TEXT = 20_000
_TESTCASE_DEPTH = 2  # testsuites > testsuite > testcase


def _clean(value: Any, limit: int = MAX_TEXT) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = _INVALID_XML.sub("\ufffd", text)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def _one_line(value: Any, width: int = 60) -> str:
    if isinstance(value, dict):
        value = " · ".join(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in value.values())
    text = " ".join(_clean(value).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _case_name(r: dict, repeats: int) -> str:
    repeat = f" repeat {r['repeat']}" if repeats > 1 else ""
    return f"case {r['case_id']}{repeat}: {_one_line(r['inputs'])}"


def _run_suite(facts: dict, marker: str) -> tuple[ET.Element, Iterator[ET.Element]]:
    """A run's suite, its testcases left out (a `marker` testcase stands where they go), and
    the testcases, built as the results are read."""
    run, counts = facts["run"], facts["counts"]
    results = facts["results"]
    suite = ET.Element("testsuite", {
        "name": _clean(f"{run['name']} ({facts['prompt']['ref']} on {run['model']})"),
        "tests": str(counts["results"]), "failures": str(counts["failed"]), "errors": str(counts["errors"]),
        "skipped": "0", "time": f"{results.latency_s():.3f}", "timestamp": _clean((run.get("created_at") or "")[:19])})
    props = ET.SubElement(suite, "properties")
    for key, value in (("prompt", facts["prompt"]["ref"]), ("model", run["model"]), ("status", run["status"]),
                       *((f"score.{k}", f"{v:.6f}") for k, v in run["scores"].items() if v is not None)):
        ET.SubElement(props, "property", {"name": key, "value": _clean(value)})
    if counts["results"]:
        ET.SubElement(suite, "testcase", {"name": marker})
    repeats = run.get("repeat") or 1
    return suite, (_testcase(r, run, repeats) for r in results)


def _testcase(r: dict, run: dict, repeats: int) -> ET.Element:
    case = ET.Element("testcase", {
        "classname": _clean(f"promptlab.{run['name']}"), "name": _case_name(r, repeats),
        "time": f"{0 if r['cached'] else (r['latency_ms'] or 0) / 1000:.3f}"})
    if r["error_kind"]:
        node = ET.SubElement(case, "error", {"type": _clean(r["error_kind"]),
                                             "message": _one_line(r["error"] or r["error_kind"], 300)})
        node.text = _clean(f"input: {_clean(r['inputs'])}\n{r['error_kind']}: {r['error'] or ''}")
    elif not r["passed"]:
        scores = ", ".join(f"{k}={v:.3f}" if v is not None else f"{k}=n/a" for k, v in r["scores"].items())
        node = ET.SubElement(case, "failure", {
            "type": "promptlab.CaseFailed",
            "message": _one_line(f"expected {_one_line(r['expected'], 120)!r}, got "
                                 f"{_one_line(r['output'], 120)!r} ({scores})", 400)})
        lines = [f"input: {_clean(r['inputs'])}", f"expected: {_clean(r['expected'])}",
                 f"output: {_clean(r['output'])}", f"scores: {scores}"]
        if r["parse_error"]:
            lines.append(f"parse error: {_clean(r['parse_error'])}")
        node.text = "\n".join(lines)
    return case


def _gate_suite(gates: list[dict]) -> ET.Element:
    failures = sum(1 for g in gates if not g["passed"])
    suite = ET.Element("testsuite", {"name": "promptlab quality gates", "tests": str(len(gates)),
                                     "failures": str(failures), "errors": "0", "skipped": "0", "time": "0"})
    for g in gates:
        case = ET.SubElement(suite, "testcase", {"classname": "promptlab.gates", "name": _clean(g["name"]),
                                                 "time": "0"})
        if not g["passed"]:
            node = ET.SubElement(case, "failure", {"type": "promptlab.GateFailed",
                                                   "message": _clean(g["message"], 400)})
            node.text = _clean(f"{g['name']}: {g['message']} (actual {g['actual']}, limit {g['limit']})")
    return suite


def _optimization_suite(facts: dict) -> ET.Element:
    opt, candidates = facts["optimization"], facts["candidates"]
    suite = ET.Element("testsuite", {"name": _clean(f"optimization {opt['name']} ({opt['strategy']})"),
                                     "tests": str(len(candidates)), "failures": "0", "errors": "0",
                                     "skipped": "0", "time": "0"})
    for c in candidates:
        scores = ", ".join(f"{s} {c[s]:.3f}" for s in ("train", "val", "test") if c[s] is not None)
        ET.SubElement(suite, "testcase", {"classname": _clean(f"promptlab.{opt['name']}"),
                                          "name": _clean(f"candidate {c['index']}: {c['ref']} ({scores})"),
                                          "time": "0"})
    return suite


def render(items: list[dict], gates: list[dict] | None = None) -> str:
    return "".join(chunks(items, gates))


def chunks(items: list[dict], gates: list[dict] | None = None) -> Iterator[str]:
    """Runs' (or an optimization's) facts, and gate results, as one JUnit XML document, in pieces:
    the document without the runs' testcases is built whole, then each run's testcases are written
    where its marker stands, one at a time as its results are read."""
    if gates is None:
        seen: dict[str, dict] = {}
        for facts in items:
            for g in facts.get("gates") or []:
                seen.setdefault(g["name"], g)
        gates = list(seen.values())
    suites, streams = [], {}
    for i, facts in enumerate(items):
        if facts["kind"] == "optimization":
            suites.append(_optimization_suite(facts))
            continue
        marker = f"promptlab-testcases-{i}-{uuid.uuid4().hex}"
        suite, streams[marker] = _run_suite(facts, marker)
        suites.append(suite)
    if gates:
        suites.append(_gate_suite(gates))
    root = ET.Element("testsuites", {
        "name": "promptlab",
        "tests": str(sum(int(s.get("tests")) for s in suites)),
        "failures": str(sum(int(s.get("failures")) for s in suites)),
        "errors": str(sum(int(s.get("errors")) for s in suites)),
        "time": f"{sum(float(s.get('time')) for s in suites):.3f}"})
    root.extend(suites)
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
    between = "\n" + "  " * _TESTCASE_DEPTH
    for marker, testcases in streams.items():
        head, _, text = text.partition(f'<testcase name="{marker}" />')
        yield head
        for n, case in enumerate(testcases):
            ET.indent(case, level=_TESTCASE_DEPTH)
            yield (between if n else "") + ET.tostring(case, encoding="unicode")
    yield text
