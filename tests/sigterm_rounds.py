"""SIGTERM at random points in real promptlab processes (eval, optimize, runs wait), each followed
by a resume, checking after every round that no finished result was lost or stored twice.

Used by tests/test_sigterm.py (a few rounds) and bench/sigterm_resume.py (two hundred)."""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field

from tests.test_runs import setup_project
from tests.test_trust import _spawn

OPTIMIZE = ("--strategy", "mcts", "--budget-calls", "120", "--knob", "demos_per_step=1", "--seed", "3")


@dataclass
class Tally:
    rounds: int = 0
    interrupted: int = 0       # the signal arrived while the command worked: exit 130
    finished: int = 0          # the command ended before the signal
    completed: int = 0         # runs, optimizations or batch runs carried to completion
    results_checked: int = 0   # finished results seen before a kill and found intact after it
    problems: list[str] = field(default_factory=list)


def _rows(ws, sql: str, params: tuple = ()) -> list[tuple]:
    for _ in range(100):
        try:
            with sqlite3.connect(ws.db_path, timeout=10) as db:
                return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:  # a database not made yet
            if "no such table" in str(exc) or "unable to open" in str(exc):
                return []
            time.sleep(0.05)
    raise RuntimeError(f"database busy: {sql}")


def _results(ws) -> dict[tuple, str]:
    """(run, case, repeat) → output of every finished result, any run."""
    return {(run, case, repeat): output for run, case, repeat, output in
            _rows(ws, "select run_id, case_id, repeat, output from results where error_kind is null")}


def _check(ws, before: dict[tuple, str], tally: Tally, what: str) -> None:
    after = _results(ws)
    lost = [k for k, out in before.items() if after.get(k) != out]
    if lost:
        tally.problems.append(f"{what}: {len(lost)} finished results lost or changed, e.g. {lost[0]}")
    tally.results_checked += len(before)
    total, distinct = _rows(ws, "select count(*), count(distinct run_id || '-' || case_id || '-' || repeat) "
                                "from results")[0]
    if total != distinct:
        tally.problems.append(f"{what}: {total - distinct} results stored twice")


def _term_at_random(ws, rng: random.Random, args: tuple, window: float, tally: Tally, what: str) -> None:
    """One round: start `args`, SIGTERM it a random delay after promptlab has started (its handler is
    up), check the store."""
    before = _results(ws)
    proc = _spawn(ws, *args)
    while proc.poll() is None and not _takes_sigterm(proc.pid):  # Python's own start-up is not promptlab's
        time.sleep(0.005)
    deadline = time.monotonic() + rng.uniform(0.0, window)
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate()
    err = err.decode(errors="replace")
    tally.rounds += 1
    if proc.returncode == 130:
        tally.interrupted += 1
    elif proc.returncode in (0, 1):  # 1: a gate (none here) or a failed verdict
        tally.finished += 1
    else:
        tally.problems.append(f"{what}: {' '.join(args)} exited {proc.returncode}: {err.strip()[-300:]}")
    if "Traceback" in err or "unexpected error" in err:
        tally.problems.append(f"{what}: {' '.join(args)}: {err.strip()[-300:]}")
    _check(ws, before, tally, what)


def _takes_sigterm(pid: int) -> bool:
    """Whether the process has its SIGTERM handler installed (SigCgt in /proc: promptlab is running)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def eval_rounds(ws, rounds: int, rng: random.Random, tally: Tally, n: int = 60) -> None:
    setup_project(ws, n=n)
    ws.fake.configure(latency_ms=20, jitter_ms=20)
    runs = 0
    for _ in range(rounds):
        name = f"e{runs}"
        status = _rows(ws, "select status from runs where name = ?", (name,))
        if status and status[0][0] == "completed":
            _finished_run(ws, name, n, tally)
            runs += 1
            name, status = f"e{runs}", []
        args = ("eval", "--resume", name) if status else ("eval", "--prompt", "p", "--name", name,
                                                           "--concurrency", "4")
        _term_at_random(ws, rng, args, 6.0, tally, "eval")


def _finished_run(ws, name: str, n: int, tally: Tally) -> None:
    count = _rows(ws, "select count(*) from results r join runs u on u.id = r.run_id where u.name = ?", (name,))[0][0]
    if count != n:
        tally.problems.append(f"run {name}: completed with {count} results, not {n}")
    tally.completed += 1


def optimize_rounds(ws, rounds: int, rng: random.Random, tally: Tally) -> None:
    from tests.test_optimizers import RULES, world

    world(ws, n=16)
    ws.fake.configure(rules=RULES[1:], default_reply="maybe", latency_ms=10)
    optimizations = 0
    for _ in range(rounds):
        name = f"o{optimizations}"
        status = _rows(ws, "select status from optimizations where name = ?", (name,))
        if status and status[0][0] == "completed":
            tally.completed += 1
            optimizations += 1
            name, status = f"o{optimizations}", []
        args = ("optimize", "--project", "p", "--resume", name) if status else (
            "optimize", "--project", "p", "--prompt", "clf@1", "--concurrency", "8", "--name", name, *OPTIMIZE)
        _term_at_random(ws, rng, args, 12.0, tally, "optimize")


def batch_wait_rounds(ws, rounds: int, rng: random.Random, tally: Tally, n: int = 40) -> None:
    from tests.test_batch import batch_settings

    setup_project(ws, n=n)
    batch_settings(ws, max_requests=10)
    ws.fake.configure(batch_delay_s=1.0)
    runs = 0
    for _ in range(3 * rounds):  # `rounds` kills while waiting; a wait that finished first submits anew
        if tally.rounds >= rounds:
            break
        name = f"b{runs}"
        status = _rows(ws, "select status from runs where name = ?", (name,))
        if status and status[0][0] == "completed":
            _finished_run(ws, name, n, tally)
            runs += 1
            name, status = f"b{runs}", []
        if not status:  # submit (no wait), uninterrupted: the rounds interrupt the waiting
            ran = _spawn(ws, "eval", "--prompt", "p", "--batch", "--no-wait", "--no-cache", "--name", name)
            ran.communicate()
            continue
        _term_at_random(ws, rng, ("runs", "wait", name), 8.0, tally, "runs wait")
