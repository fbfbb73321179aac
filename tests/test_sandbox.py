"""The Python sandbox and the python_tests metric, fed hostile model outputs.

Every hostile program must be stopped by the sandbox's own limits and scored as
a failure while this process keeps running. No test asserts an upper bound on
wall-clock time (the machine is noisy); the sandbox's limits do the stopping.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from promptlab.models import FieldSpec
from promptlab.sandbox import run_python
from promptlab.scorers.base import MetricError, ScoreInput
from promptlab.scorers.code import extract_code, python_tests

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="the uid drop / network namespace need root")

TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(2, 2) == 5\n"


def sandbox_procs() -> list[int]:
    """Live processes still running a sandbox harness."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if b"promptlab-sandbox-" in cmd and b"harness.py" in cmd and state not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def assert_no_leftovers() -> None:
    for _ in range(50):          # SIGKILLed processes can take a moment to disappear
        if not sandbox_procs():
            return
        time.sleep(0.1)
    assert sandbox_procs() == []


def assert_host_alive() -> None:
    out = subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok"


# --------------------------------------------------------------------------- extract_code


def test_extract_code_prefers_the_python_block():
    text = "Here you go:\n```bash\nrm -rf /\n```\nand\n```python\ndef f():\n    return 1\n```\nDone."
    assert extract_code(text) == "def f():\n    return 1"


@pytest.mark.parametrize("fence", ["```py", "```", "```Python3", "~~~python"])
def test_extract_code_fence_variants(fence):
    close = "~~~" if fence.startswith("~") else "```"
    assert extract_code(f"Sure.\n{fence}\nx = 1\n{close}\ntrailing prose") == "x = 1"


def test_extract_code_without_fence_is_the_whole_text():
    assert extract_code("  def f(): return 2\n") == "def f(): return 2"


def test_extract_code_unterminated_fence():
    assert extract_code("Answer:\n```python\nx = 1\ny = 2") == "x = 1\ny = 2"


# --------------------------------------------------------------------------- ordinary programs


def test_correct_code_passes():
    r = run_python("def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n")
    assert (r.status, r.passed, r.tests_passed, r.tests_total) == ("passed", True, 2, 2), r


def test_wrong_code_fails_with_partial_counts():
    r = run_python("def add(a, b):\n    return a + b\n", TESTS)
    assert (r.status, r.passed, r.tests_passed, r.tests_total) == ("failed", False, 2, 3), r
    assert "line 3" in r.message and "\n" not in r.message


def test_exceptions_in_tests_count_as_failures_and_the_rest_still_run():
    r = run_python("def add(a, b):\n    return a - b\n",
                   "assert add(1, 2) == 3\nassert add(1, None) == 1\nassert add(2, 0) == 2\n")
    assert (r.status, r.tests_passed, r.tests_total) == ("failed", 1, 3), r


def test_check_function_style_counts_calls():
    tests = "def check(f):\n    assert f(1, 2) == 3\n    assert f(0, 0) == 0\n\ncheck(add)\n"
    ok = run_python("def add(a, b): return a + b", tests)
    bad = run_python("def add(a, b): return a * b", tests)
    assert (ok.status, ok.tests_passed, ok.tests_total) == ("passed", 1, 1)
    assert (bad.status, bad.tests_passed, bad.tests_total) == ("failed", 0, 1)


def test_syntax_error_and_runtime_error_crash():
    r = run_python("def add(a, b) return a", TESTS)
    assert r.status == "crashed" and "SyntaxError" in r.message and r.tests_total == 3
    r = run_python("1 / 0", TESTS)
    assert r.status == "crashed" and "ZeroDivisionError" in r.message


def test_allowed_imports_work_and_stdout_is_captured():
    code = "import math, json, collections, datetime\nprint('hello', math.isqrt(17))\n" \
           "d = datetime.datetime.strptime('2024-01-02', '%Y-%m-%d')\n"
    r = run_python(code, "assert d.day == 2\nassert json.loads('[1]') == [1]\n")
    assert r.status == "passed", r
    assert r.stdout.strip() == "hello 4"


def test_invalid_tests_are_a_case_error():
    with pytest.raises(ValueError):
        run_python("x = 1", "assert (")


def test_main_guard_does_not_run():
    r = run_python("def f(): return 1\nif __name__ == '__main__':\n    input()\n", "assert f() == 1")
    assert r.status == "passed", r


# --------------------------------------------------------------------------- hostile programs


def test_forbidden_import():
    r = run_python("import subprocess\nsubprocess.run(['true'])\n", TESTS)
    assert (r.status, r.passed) == ("forbidden", False), r
    assert "subprocess" in r.message


def test_infinite_loop_hits_the_wall_clock_limit():
    r = run_python("while True:\n    pass\n", TESTS, timeout_s=2, cpu_s=60)
    assert (r.status, r.passed) == ("timeout", False), r
    assert_no_leftovers()


def test_infinite_loop_hits_the_cpu_limit():
    r = run_python("while True:\n    pass\n", TESTS, timeout_s=120, cpu_s=1)
    assert (r.status, r.passed) == ("timeout", False), r
    assert "CPU" in r.message


@pytest.mark.parametrize("code", [
    'x = b" " * 4_000_000_000',
    "x = [0] * 1_000_000_000",
    "x = []\nwhile True:\n    x.append(bytearray(10_000_000))",
])
def test_memory_hogs(code):
    r = run_python(code, TESTS, memory_mb=256)
    assert (r.status, r.passed) == ("memory", False), r


def test_write_outside_the_directory_is_refused():
    target = f"/tmp/pwned-{uuid.uuid4().hex}"
    try:
        r = run_python(f"open({target!r}, 'w').write('pwned')\n", TESTS)
        assert (r.status, r.passed) == ("forbidden", False), r
        r = run_python(f"import os\nos.open({target!r}, os.O_WRONLY | os.O_CREAT)\n", TESTS,
                       allowed_imports=frozenset({"os"}))
        assert (r.status, r.passed) == ("forbidden", False), r
        assert not os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)


def test_files_inside_the_directory_are_fine():
    r = run_python("open('scratch.txt', 'w').write('hi')\ntext = open('scratch.txt').read()\n",
                   "assert text == 'hi'")
    assert r.status == "passed", r


@root_only
def test_chroot_and_uid_drop_block_writes_even_without_python_guards(tmp_path):
    target = tmp_path / "pwned"
    r = run_python(f"open({str(target)!r}, 'w').write('pwned')\n", TESTS, python_guards=False)
    assert not r.passed and "chroot" in r.protections
    assert "FileNotFoundError" in r.message          # the host's filesystem is not in view
    assert not target.exists()
    r = run_python("open('/pwned', 'w').write('pwned')\n", TESTS, python_guards=False)
    assert not r.passed and "uid" in r.protections
    assert "PermissionError" in r.message            # the chroot's own root belongs to root


def test_environment_is_not_inherited(monkeypatch):
    monkeypatch.setenv("PROMPTLAB_FAKE_API_KEY", "sk-secret-123")
    r = run_python("import os\nprint(sorted(os.environ.items()))\n", "", allowed_imports=frozenset({"os"}))
    assert r.status == "passed", r
    assert "sk-secret" not in r.stdout and "PROMPTLAB" not in r.stdout


@pytest.fixture
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.setblocking(False)
    yield srv
    srv.close()


def _nothing_arrived(srv: socket.socket) -> bool:
    try:
        conn, _ = srv.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def test_socket_is_refused_by_the_guard(listener):
    port = listener.getsockname()[1]
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))\ns.sendall(b'pwned')\n"
    r = run_python(code, TESTS, allowed_imports=frozenset({"socket"}))
    assert (r.status, r.passed) == ("forbidden", False), r
    assert _nothing_arrived(listener)


@root_only
def test_network_namespace_blocks_sockets_without_python_guards(listener):
    port = listener.getsockname()[1]
    code = (f"import socket\ns = socket.socket()\ns.settimeout(3)\ns.connect(('127.0.0.1', {port}))\n"
            "s.sendall(b'pwned')\n")
    r = run_python(code, TESTS, allowed_imports=None, python_guards=False)
    assert "netns" in r.protections
    assert (r.status, r.passed) == ("crashed", False), r
    assert _nothing_arrived(listener)


def test_fork_is_refused_by_the_guard():
    r = run_python("import os\nwhile True:\n    os.fork()\n", TESTS, allowed_imports=frozenset({"os"}))
    assert (r.status, r.passed) == ("forbidden", False), r


@root_only
@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    os.fork()\n",
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
])
def test_fork_bomb_is_contained_without_python_guards(code):
    r = run_python(code, TESTS, allowed_imports=None, python_guards=False, timeout_s=3, max_processes=16)
    assert not r.passed and r.status in ("crashed", "timeout"), r
    assert "RLIMIT_NPROC" in r.protections and "uid" in r.protections
    assert_no_leftovers()
    assert_host_alive()


@root_only
def test_nproc_limit_caps_the_number_of_processes():
    code = ("import os, time\nkids = 0\nfor _ in range(40):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n"
            "    kids += 1\n")
    r = run_python(code, "assert kids == 7", allowed_imports=None, python_guards=False, max_processes=8)
    assert r.status == "passed", r         # 1 harness + 7 children = the limit of 8
    assert_no_leftovers()


def test_huge_output_is_stopped_and_truncated():
    r = run_python("while True:\n    print('x' * 1000)\n", TESTS, max_output_bytes=10_000, timeout_s=20)
    assert not r.passed and r.status == "crashed", r
    assert len(r.stdout) < 11_000


def test_forked_children_do_not_report_results():
    code = "import os\nif os.fork() == 0:\n    pass\n"     # the child returns into the harness too
    r = run_python(code, "assert True", allowed_imports=None, python_guards=False)
    assert (r.status, r.tests_passed, r.tests_total) == ("passed", 1, 1), r
    assert_no_leftovers()


# --------------------------------------------------------------------------- the metric


def _item(output: str, tests: str | None = TESTS, parsed=None, outputs=()):
    return ScoreInput(output=output, parsed=parsed, parse_error=None,
                      expected={} if tests is None else {"tests": tests}, inputs={}, outputs=outputs)


def test_metric_scores_partial_credit_and_hostile_outputs():
    metric = python_tests(timeout_s=3)
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    items = [
        _item(good),
        _item("```python\nimport subprocess\n```"),
        _item("```python\nwhile True: pass\n```"),
        _item('x = b" " * 4_000_000_000'),
        _item("def add(a, b): return a + b", tests=None),
    ]

    async def go():
        return await asyncio.gather(*(metric.score(i) for i in items))

    scores = asyncio.run(go())
    assert scores[0].value == pytest.approx(2 / 3) and not scores[0].passed
    assert scores[0].detail["status"] == "failed"
    assert [s.detail.get("status") for s in scores[1:4]] == ["forbidden", "timeout", "memory"]
    assert all(s.value == 0.0 and not s.passed for s in scores[1:4])
    assert scores[4].value is None and "error" in scores[4].detail
    summary = metric.summarize(scores)
    assert summary["n"] == 4 and summary["errors"] == 1
    assert summary["mean"] == pytest.approx((2 / 3) / 4) and summary["pass_rate"] == 0
    assert summary["status_counts"]["forbidden"] == 1 and summary["status_counts"]["passed"] == 0


def test_metric_reads_the_parsed_field_and_inputs_tests():
    metric = python_tests(field="code", allowed_imports=["os"])
    item = ScoreInput(output="{...}", parsed={"code": "def add(a, b): return a + b"}, parse_error=None,
                      expected={}, inputs={"tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
                      outputs=(FieldSpec(name="code"),))
    score = asyncio.run(metric.score(item))
    assert (score.value, score.passed, score.detail["status"]) == (1.0, True, "passed")


def test_metric_rejects_unknown_arguments():
    with pytest.raises(MetricError):
        python_tests(timeout=3)
    from promptlab.scorers.registry import get_metric
    with pytest.raises(MetricError):
        get_metric({"name": "python_tests", "bogus": 1})
    assert get_metric({"name": "python_tests", "timeout_s": 2}).spec["timeout_s"] == 2
