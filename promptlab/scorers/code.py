"""The python_tests metric: run the model's code against the case's tests in a sandbox.

    {"name": "python_tests", "field": "code", "tests_field": "tests", "timeout_s": 5}

The code is the output field ``field`` (default: the signature's first output
field; the raw output when there is no signature), with the first fenced code
block extracted (`extract_code`; answers over 200,000 characters score 0). The tests are
``expected[tests_field]``, else ``inputs[tests_field]``: Python source (or a
list of lines), usually ``assert`` statements, run after the code.

value = tests passed / tests counted (with no countable tests: 1 if the code ran
cleanly, else 0); passed = every test passed. A case without tests, or with
tests that are not valid Python, is unscored (value None). See
`promptlab.sandbox` for what the sandbox does and does not protect against.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections import Counter
from typing import Any

from promptlab.sandbox import DEFAULT_ALLOWED, STATUSES, run_python
from promptlab.scorers.base import MetricError, Score, ScoreInput

MAX_REPLY_CHARS = 200_000   # a longer answer scores 0 unread: no task here needs that much code
_PY_TAGS = {"python", "py", "python3", "py3"}
_TAG = re.compile(r"[ \t]*([\w+.#-]*)")

# Sandboxes are CPU-bound and have wall-clock limits: running more at once than
# there are cores would turn a slow machine into spurious timeouts.
_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


def extract_code(text: str) -> str:
    """The code in a model reply, found in one pass over its lines.

    The first fenced block (```` ``` ```` or ``~~~``, three or more) tagged
    python/py/python3 wins; else the first untagged one; else the first of any
    language; else the whole text (stripped).  A fence is closed by a line of
    the same character at least as long; an unclosed one (a truncated reply)
    runs to the end.  No attempt is made to strip prose from unfenced text: if
    it is not valid Python the run reports a SyntaxError, the honest result.
    """
    lines = text.split("\n")
    blocks: list[tuple[str, str]] = []
    fence, tag, start = "", "", 0
    for i, line in enumerate(lines):
        stripped = line.strip(" \t\r")
        if fence:
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                blocks.append((tag, "\n".join(lines[start:i])))
                fence = ""
        elif stripped[:3] in ("```", "~~~"):
            run = len(stripped) - len(stripped.lstrip(stripped[0]))
            fence, start = stripped[:run], i + 1
            tag = _TAG.match(stripped, run).group(1).lower()
    if fence:
        blocks.append((tag, "\n".join(lines[start:])))
    for want in (lambda t: t in _PY_TAGS, lambda t: t == "", lambda t: True):
        for tag, body in blocks:
            if want(tag):
                return body.strip("\n")
    return text.strip()


_ARGS = ("field", "tests_field", "timeout_s", "cpu_s", "memory_mb", "allowed_imports", "max_output_bytes")


class PythonTestsMetric:
    runs_code = True  # a run using it needs the project's allow_code_execution (promptlab.evaluation.evaluate)

    def __init__(self, spec: dict[str, Any], field: str | None, tests_field: str, run_args: dict[str, Any]):
        self.name = "python_tests"
        self.spec = spec
        self._field = field
        self._tests_field = tests_field
        self._run_args = run_args

    def _code(self, item: ScoreInput) -> str | Score:
        name = self._field or (item.outputs[0].name if item.outputs else None)
        if name is None:
            return item.output
        if item.parsed is not None:
            if name not in item.parsed:
                return Score(0.0, False, {"status": "crashed", "message": f"the output has no field '{name}'"})
            value = item.parsed[name]
            return value if isinstance(value, str) else str(value)
        only_string = not item.outputs or (len(item.outputs) == 1 and item.outputs[0].type == "string")
        if only_string:
            return item.output
        return Score(0.0, False, {"status": "crashed",
                                  "parse_error": item.parse_error or "the output could not be parsed",
                                  "message": "the output could not be parsed"})

    def _tests(self, item: ScoreInput) -> str | None:
        for source in (item.expected, item.inputs):
            tests = source.get(self._tests_field)
            if tests is None:
                continue
            if isinstance(tests, (list, tuple)):
                return "\n".join(str(t) for t in tests)
            return str(tests)
        return None

    def _run(self, reply: str, tests: str):
        code = extract_code(reply)
        with _SLOTS:
            return run_python(code, tests, **self._run_args)

    async def score(self, item: ScoreInput) -> Score:
        code = self._code(item)
        if isinstance(code, Score):
            return code
        tests = self._tests(item)
        if tests is None or not tests.strip():
            return Score(None, False, {"error": f"the case has no tests in '{self._tests_field}'"})
        if len(code) > MAX_REPLY_CHARS:
            return Score(0.0, False, {"status": "crashed", "message": (
                f"the answer is {len(code):,} characters; python_tests reads at most {MAX_REPLY_CHARS:,}")})
        try:   # off the event loop: other items keep flowing while this one runs
            result = await asyncio.to_thread(self._run, code, tests)
        except ValueError as exc:          # the case's tests are not valid Python
            return Score(None, False, {"error": str(exc)})
        except OSError as exc:             # could not start the sandbox at all
            return Score(None, False, {"error": f"python_tests: cannot run the sandbox: {exc}"})
        if result.tests_total:
            value = result.tests_passed / result.tests_total
        else:
            value = 1.0 if result.passed else 0.0
        return Score(value, result.passed, {
            "status": result.status, "message": result.message,
            "tests_passed": result.tests_passed, "tests_total": result.tests_total,
        })

    def summarize(self, scores: list[Score]) -> dict[str, Any]:
        from promptlab.scorers.stats import summarize_scores

        summary = summarize_scores(scores)
        counts = Counter(s.detail.get("status") for s in scores if s.value is not None)
        summary["status_counts"] = {status: counts.get(status, 0) for status in STATUSES}
        return summary

    def __repr__(self) -> str:
        return f"<metric {self.spec}>"


def python_tests(
    field: str | None = None,
    tests_field: str = "tests",
    timeout_s: float = 5.0,
    cpu_s: int | None = None,
    memory_mb: int = 512,
    allowed_imports: list[str] | None = None,
    max_output_bytes: int = 64_000,
    **unknown: Any,
) -> PythonTestsMetric:
    """Fraction of the case's tests the model's code passes, run in a sandbox.

    allowed_imports: extra modules the code may import, on top of the sandbox's
    default allow-list (math, re, collections, itertools, ...). cpu_s defaults
    to the wall-clock limit, rounded up.
    """
    if unknown:
        raise MetricError(f"metric 'python_tests' has no argument '{sorted(unknown)[0]}' "
                          f"(its arguments: {', '.join(_ARGS)})")
    if timeout_s <= 0:
        raise MetricError(f"metric 'python_tests': argument 'timeout_s' must be positive (got {timeout_s})")
    if memory_mb < 64:
        raise MetricError(f"metric 'python_tests': argument 'memory_mb' must be at least 64 (got {memory_mb})")
    if cpu_s is not None and cpu_s < 1:
        raise MetricError(f"metric 'python_tests': argument 'cpu_s' must be at least 1 (got {cpu_s})")
    if max_output_bytes < 0:
        raise MetricError("metric 'python_tests': argument 'max_output_bytes' must not be negative")
    if allowed_imports is not None and (
            isinstance(allowed_imports, str) or not all(isinstance(m, str) for m in allowed_imports)):
        raise MetricError("metric 'python_tests': argument 'allowed_imports' must be a list of module names")
    extra = sorted(set(allowed_imports or ()))
    spec: dict[str, Any] = {"name": "python_tests", "field": field, "tests_field": tests_field,
                            "timeout_s": timeout_s, "cpu_s": cpu_s, "memory_mb": memory_mb,
                            "allowed_imports": extra or None, "max_output_bytes": max_output_bytes}
    run_args = {"timeout_s": float(timeout_s), "cpu_s": int(cpu_s or -(-timeout_s // 1)),
                "memory_mb": int(memory_mb), "allowed_imports": DEFAULT_ALLOWED | frozenset(extra),
                "max_output_bytes": int(max_output_bytes)}
    return PythonTestsMetric(spec, field, tests_field, run_args)
