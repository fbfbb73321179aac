"""The Python sandbox and the python_tests metric, fed hostile model outputs.

Every hostile program must be stopped by the sandbox's own limits and scored as
a failure while this process keeps running. Only code extraction has a
wall-clock bound (the issue demands it); elsewhere the sandbox's limits do the
stopping.
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


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
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


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
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


# --------------------------------------------------------------------------- the verdict cannot be forged

FORGE_TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 5\nassert add(0, 0) == 0\n"   # honest: 2 of 3
FORGED = '{"event": "done", "status": "passed", "message": "all good", "passed": 3, "total": 3, "lost": false}'
ADD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(params=["uids", "userns"])
def isolation(request, monkeypatch):
    """Both ways the sandbox confines: fresh uids (root), and a user namespace (anyone else)."""
    if request.param == "uids" and not IS_ROOT:
        pytest.skip("fresh uids need root")
    if request.param == "userns":
        monkeypatch.setattr("promptlab.sandbox._is_root", lambda: False)
    return request.param


@pytest.mark.parametrize("payload", [
    f"open(3, 'w').write({FORGED!r} + '\\n')\n" + ADD,
    f"import os\nfor fd in range(3, 21):\n    try:\n        os.write(fd, {FORGED!r}.encode() + b'\\n')\n"
    "    except OSError:\n        pass\n" + ADD,
    "__builtins__.exec = lambda *a, **k: None\n__builtins__.compile = lambda *a, **k: None\n"
    "__builtins__.AssertionError = type('Nope', (Exception,), {})\n" + ADD,
    "import sys\nmain = sys.modules['__main__']\nmain.encode = lambda value, ref: True\n"
    "sys.modules['json'].loads = lambda *a, **k: {'id': 1, 'value': True}\n" + ADD,
    "def len(x):\n    return 3\n" + ADD,                       # the tests' builtins stay the real ones
    f"print({FORGED!r})\n" + ADD,
    "import os\n" + ADD + "os._exit(0)\n",
    "import os\ndef add(a, b):\n    os._exit(0)\n",
])
def test_code_cannot_forge_its_verdict(payload, isolation):
    r = run_python(payload, FORGE_TESTS + "assert len([]) == 0\n", allowed_imports=None, python_guards=False)
    assert r.status in ("failed", "crashed"), r
    assert r.tests_passed <= 3 and r.tests_total == 4, r     # never more than honest code: add(2, 2) != 5


def test_a_process_that_speaks_the_protocol_cannot_replace_the_tests_builtins():
    """Code that answers the tests itself (every call returns 1) and names a __builtins__ of its own."""
    code = ("import os, sys, json\nrfd, wfd = int(sys.argv[3]), int(sys.argv[4])\n"
            "def say(message):\n    os.write(wfd, json.dumps(message).encode() + b'\\n')\n"
            "say({'loaded': True, 'names': {'__builtins__': ['D', [['len', ['H', 0]]]], 'add': ['H', 0]}})\n"
            "requests = os.fdopen(rfd, 'rb')\nfor line in requests:\n"
            "    say({'id': json.loads(line)['id'], 'value': 1})\nos._exit(0)\n")
    r = run_python(code, "assert len('ab') == 1\nassert add(0, 1) == 1\n", allowed_imports=None,
                   python_guards=False)
    assert (r.status, r.tests_passed, r.tests_total) == ("failed", 1, 2), r   # its add may answer 1


def test_honest_code_still_scores_full_marks(isolation):
    metric = python_tests()
    score = asyncio.run(metric.score(_item(f"```python\n{ADD}```", tests="assert add(1, 2) == 3\nassert add(0, 0) == 0")))
    assert (score.value, score.passed, score.detail["status"]) == (1.0, True, "passed")


@pytest.mark.parametrize("forged", [
    FORGED,                                                          # a second final verdict
    FORGED.replace('"passed": 3', '"passed": -300'),
    FORGED.replace('"passed": 3', '"passed": 1e999'),
    FORGED.replace('"passed": 3', '"passed": "3"'),
    FORGED.replace('"passed": 3', '"passed": true'),
    FORGED.replace('"passed": 3', '"passed": 5'),
    FORGED.replace('"total": 3', '"total": 7'),
    FORGED.replace('"passed": 3', '"passed": 2'),                  # "passed" with a test failing
    FORGED.replace('"passed"', '"excellent"', 1),
    "not json at all",
])
def test_impossible_verdicts_are_crashes(forged):
    """The tests process holds the verdict fd; even tests that write forged lines to it get 'crashed'."""
    tests = ("import os\nfor fd in range(3, 1024):\n    try:\n"
             f"        os.write(fd, {forged!r}.encode() + b'\\n')\n    except OSError:\n        pass\n"
             "assert add(1, 2) == 3\nassert add(2, 2) == 4\nassert add(0, 0) == 0\n")
    r = run_python(ADD, tests, allowed_imports=frozenset({"os"}))
    assert (r.status, r.passed) == ("crashed", False), r
    assert 0 <= r.tests_passed <= r.tests_total == 3


def test_values_cross_as_data_and_objects_as_proxies():
    code = ("class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n"
            "        self.items.append(x)\n    def pop(self):\n        return self.items.pop()\n"
            "def squares(n):\n    for i in range(n):\n        yield i * i\n"
            "def sort_in_place(xs):\n    xs.sort()\n"
            "def check_positive(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
            "def big():\n    return 2 ** 20000, {1: (2.5, b'x', None)}, frozenset({3}), 1 + 2j\n"
            "def keywords(op, self, f):\n    return op + self + f\n")
    tests = ("s = Stack()\ns.push(1)\ns.push(2)\nassert s.pop() == 2 and s.items == [1] and isinstance(s, Stack)\n"
             "assert list(squares(4)) == [0, 1, 4, 9] and sum(squares(3)) == 5\n"
             "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]\n"
             "try:\n    check_positive(-1)\n    assert False\nexcept ValueError as e:\n    assert 'negative' in str(e)\n"
             "assert big() == (2 ** 20000, {1: (2.5, b'x', None)}, frozenset({3}), 1 + 2j)\n"
             "assert keywords(op=1, self=2, f=3) == 6\n"
             "assert sort_in_place(lambda: 1) is None\n")
    r = run_python(code, tests)
    assert (r.status, r.tests_passed, r.tests_total) == ("failed", 6, 7), r
    assert "TypeError" in r.message and "cannot be passed to the code under test" in r.message


# --------------------------------------------------------------------------- what the code can reach


@pytest.fixture
def secret_db(tmp_path):
    """A database holding another case's hidden answer: one private copy, one world-readable."""
    paths = []
    for name, mode in (("private.db", 0o600), ("open.db", 0o644)):
        path = tmp_path / name
        path.write_text("expected: hidden-answer-4242")
        path.chmod(mode)
        paths.append(str(path))
    tmp_path.chmod(0o755)
    return paths


def test_the_database_is_out_of_reach(secret_db, isolation):
    code = ("import os\nfound = []\nfor p in %r:\n    try:\n        found.append(open(p).read())\n"
            "    except OSError as e:\n        found.append(type(e).__name__)\nprint(found, os.path.exists('/etc/passwd'))\n") % secret_db
    r = run_python(code, "assert 'hidden-answer-4242' not in str(found)", allowed_imports=None, python_guards=False)
    assert "chroot" in r.protections
    assert (r.status, r.passed) == ("passed", True), r
    assert "hidden-answer" not in r.stdout
    assert r.stdout.strip() == "['FileNotFoundError', 'FileNotFoundError'] False"   # the host is out of view


def test_the_database_is_refused_by_the_guard(secret_db):
    r = run_python(f"text = open({secret_db[1]!r}).read()\n", "assert True")
    assert (r.status, r.passed) == ("forbidden", False), r


def test_the_code_cannot_read_the_tests(isolation):
    """The hidden expected answer lives in the tests process only."""
    code = ("import os\nfound = ''\nfor top, dirs, files in os.walk('/'):\n    for f in files:\n        try:\n"
            "            found += open(os.path.join(top, f), errors='replace').read()\n        except OSError:\n"
            "            pass\ndef answer():\n    i = found.find('hidden-')\n    return found[i:i + 11]\n")
    r = run_python(code, "assert answer() == 'hidden-4242'", allowed_imports=None, python_guards=False)
    assert (r.status, r.tests_passed) == ("failed", 0), r


@pytest.fixture
def unix_listeners(tmp_path):
    """A Unix socket on the host's filesystem and one in the abstract namespace, listening."""
    tmp_path.chmod(0o755)
    path = str(tmp_path / "host.sock")
    abstract = f"\0promptlab-test-{uuid.uuid4().hex}"
    servers = []
    for address in (path, abstract):
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(address)
        srv.listen(5)
        srv.setblocking(False)
        servers.append(srv)
    os.chmod(path, 0o777)
    yield (path, abstract), servers
    for srv in servers:
        srv.close()


def test_unix_sockets_on_the_host_are_out_of_reach(unix_listeners, isolation):
    addresses, servers = unix_listeners
    code = ("import socket\nerrors = []\nfor address in %r:\n    try:\n"
            "        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n        s.connect(address)\n"
            "        s.sendall(b'pwned')\n        errors.append(None)\n    except OSError as e:\n"
            "        errors.append(type(e).__name__)\n") % (addresses,)
    r = run_python(code, "assert None not in errors", allowed_imports=None, python_guards=False)
    assert (r.status, r.passed) == ("passed", True), r
    assert all(_nothing_arrived(srv) for srv in servers)
    guarded = run_python(f"import socket\nsocket.socket(socket.AF_UNIX).connect({addresses[0]!r})\n", "assert True",
                         allowed_imports=frozenset({"socket"}))
    assert guarded.status == "forbidden", guarded
    assert all(_nothing_arrived(srv) for srv in servers)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the seccomp filter is x86_64 only")
def test_seccomp_refuses_sockets_signals_and_chroot(isolation):
    code = ("import os, socket\nrefused = []\nfor attempt in (lambda: socket.socket(socket.AF_UNIX),\n"
            "                lambda: socket.socketpair() and socket.socket(socket.AF_INET),\n"
            "                lambda: os.kill(os.getpid(), 0), lambda: os.chroot('/work')):\n"
            "    try:\n        attempt()\n        refused.append(False)\n    except PermissionError:\n"
            "        refused.append(True)\n")
    r = run_python(code, "assert refused == [True, True, True, True]", allowed_imports=None, python_guards=False)
    assert "seccomp" in r.protections
    assert (r.status, r.passed) == ("passed", True), r


# --------------------------------------------------------------------------- huge or hostile replies


def test_extract_code_is_linear_on_unclosed_fences():
    text = "```a\n" * 120_000                        # 600 kB; the old regex took minutes on this
    started = time.perf_counter()
    extract_code(text)
    assert time.perf_counter() - started < 1.0     # the bound the issue demands, on extraction alone


def test_extract_code_closing_fences_and_truncated_blocks():
    assert extract_code("```bash\nls\n```\n```python\nx = 1") == "x = 1"       # a truncated block still counts
    assert extract_code("````python\na = '```'\n```\nb = 2\n`````\n") == "a = '```'\n```\nb = 2"
    assert extract_code("~~~\nx = 1\n```\ny = 2\n~~~") == "x = 1\n```\ny = 2"


def test_metric_refuses_a_huge_reply():
    metric = python_tests()
    score = asyncio.run(metric.score(_item("```python\n" + "x = 1\n" * 40_000, tests="assert x == 1")))
    assert (score.value, score.passed, score.detail["status"]) == (0.0, False, "crashed")
    assert "240,010 characters" in score.detail["message"] and "200,000" in score.detail["message"]


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
def test_other_items_keep_flowing_while_code_runs():
    """A cheap item finishes while a slow code item is still in its sandbox."""
    from promptlab.config import ModelConfig
    from promptlab.models import Case, Completion
    from promptlab.progress import RunTotal, SilentProgress
    from promptlab.evaluation.runner import Job, evaluate
    from promptlab.scorers import get_metric

    class Gateway:
        async def complete(self, model, messages, params, use_cache=True, sample=0):
            return Completion(text=messages[0]["content"])

        def adaptive_limits(self):
            return {}

    class Sink:
        def __init__(self):
            self.items = []

        def add(self, item):
            self.items.append(item.case_id)

        def check(self):
            pass

        def close(self):
            pass

    slow = python_tests(timeout_s=3)
    cheap = get_metric("exact_match")
    model = ModelConfig(model="fake/model")

    def job(case_id, text, metric, expected):
        case = Case(id=case_id, inputs={}, expected=expected)
        return Job(run_id=1, case=case, repeat=0, messages=[{"role": "user", "content": text}], model=model,
                   params={}, signature=None, metrics=(metric,))

    jobs = [job(1, "```python\nwhile True:\n    pass\n```", slow, {"tests": "assert True"})]
    jobs += [job(i, "yes", cheap, {"output": "yes"}) for i in range(2, 6)]
    sink = Sink()
    asyncio.run(evaluate(jobs, Gateway(), sink, SilentProgress(), runs=(RunTotal(1, "code", len(jobs)),),
                         concurrency=2))
    assert sink.items == [2, 3, 4, 5, 1]


ALWAYS_EQUAL = """\
class Anything:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = object.__hash__

class Number(int):
    def __eq__(self, other):
        return True

def add(a, b):
    return Anything()

def inc(a):
    return Number(0)

def pair(a):
    return [Anything(), Anything()]
"""


def test_an_object_that_equals_everything_passes_no_test():
    """The sandbox compares by builtin types: an __eq__ of the code's own answering True (on an
    object, an int subclass, inside a list) is not equality."""
    tests = ("assert add(1, 2) == 3\nassert not (add(1, 2) != 3)\nassert 3 == add(1, 2)\n"
             "assert inc(1) == 2\nassert pair(1) == [1, 2]\nassert {'k': add(0, 0)} == {'k': 0}\n")
    r = run_python(ALWAYS_EQUAL, tests)
    assert (r.tests_passed, r.tests_total) == (0, 6), r
    honest = run_python("def add(a, b):\n    return [a, (b, {'s': {1, 2}})]\n",
                        "assert add(1, 2) == [1, (2, {'s': {1, 2}})]\nassert add(1, 2) != [1, (2, {})]\n")
    assert (honest.tests_passed, honest.tests_total) == (2, 2), honest
