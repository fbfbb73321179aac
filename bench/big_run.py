"""Showing a big run: CPU seconds and peak memory of `runs show`, `report -f html`, `report -f json`,
`suggest --json` (which also asks the model once) and the viewer's pages on a run of N results
(default 100,000).

The run is a real eval of a few cases against the loopback server, its results then copied in
SQL onto N synthetic cases (tests/big_run.py). Each command runs in its own process: its CPU is
user + system from wait4, its peak is the child's maximum resident set. The viewer is a real
`promptlab view` process: a page's CPU is the growth of that process's CPU time over the request
(/proc), its peak the process's high-water mark (VmHWM) after the pages were served.

    python bench/big_run.py [--n 100000] [--code DIR]

--code runs the commands from another checkout (PYTHONPATH=DIR), to measure before and after on
one database. Prints one line per measure and whether it meets the issue's bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.big_run import TEMPLATE_CASES, grow_run  # noqa: E402
from tests.fake_openai import start_server  # noqa: E402

PAGE_TIMEOUT_S = 600


def measure(cmd: list[str], **kw) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of a child process run to the end."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, **kw)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status):
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd[2:6])} failed: {err.read().decode()[-2000:]}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def build(work: Path, env: dict, n: int) -> None:
    cli = [sys.executable, "-m", "promptlab"]
    (work / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in TEMPLATE_CASES))
    for args in (["project", "add", "bench"],
                 ["signature", "add", "s", "-i", "text", "-o", "label:enum:positive,negative"],
                 ["case", "import", "cases.jsonl"],
                 ["prompt", "add", "p", "--signature", "s", "--template", "Review: {{ text }}"],
                 ["eval", "--prompt", "p", "--name", "r1", "--metric", "classification", "--metric", "exact_match"]):
        subprocess.run(cli + args, cwd=work, env=env, check=True, capture_output=True)
    grow_run(work / ".promptlab" / "promptlab.db", "r1", n)


def viewer_pages(work: Path, env: dict) -> dict[str, tuple[float, float, int]]:
    """{page: (CPU seconds, wall seconds, bytes)} from a real `promptlab view`, and its peak."""
    proc = subprocess.Popen([sys.executable, "-m", "promptlab", "view", "--port", "0"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        base = proc.stdout.readline().split()[2].rstrip("/")  # loopback: no token
        with sqlite3.connect(work / ".promptlab" / "promptlab.db") as db:  # a case halfway through the run
            case_id = db.execute("select case_id from results order by case_id limit 1 offset "
                                 "(select count(*) / 2 from results)").fetchone()[0]
        out = {}
        for name, path in (("run page", "/runs/1"), ("run page, failed only", "/runs/1?status=fail"),
                           ("one result", f"/runs/1/results/{case_id}/0")):
            before, started = proc_cpu(proc.pid), time.perf_counter()
            with urllib.request.urlopen(base + path, timeout=PAGE_TIMEOUT_S) as r:
                size = len(r.read())
            out[name] = (proc_cpu(proc.pid) - before, time.perf_counter() - started, size)
        out["peak"] = (proc_peak_mb(proc.pid), 0.0, 0)
        return out
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose promptlab runs (default: this one)")
    args = parser.parse_args()
    with start_server("--default-reply", "positive") as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "promptlab.toml").write_text(
            f'[defaults]\nmodel = "fake"\n\n[models.fake]\nmodel = "openai/fake"\napi_base = "{server.base_url}"\n')
        env = {**os.environ, "PROMPTLAB_CONFIG": str(work / "promptlab.toml"), "CI": "true", "PYTHONPATH": str(ROOT)}
        build(work, env, args.n)
        env["PYTHONPATH"] = str(args.code.resolve())
        cli = [sys.executable, "-m", "promptlab"]
        print(f"a run of {args.n:,} results; promptlab from {args.code}")
        for name, cmd in (("runs show", ["runs", "show", "r1"]),
                          ("report -f html", ["report", "r1", "-o", "r1.html"]),
                          ("report -f json", ["report", "r1", "-o", "r1.json"]),
                          ("suggest --json", ["suggest", "r1", "--json"])):
            cpu, peak = measure(cli + cmd, cwd=work, env=env)
            bounded = "" if name.endswith("json") else f"  (bound: 150 MB, 2 s: {'ok' if peak < 150 and cpu < 2 else 'OVER'})"
            print(f"  {name:<24} {cpu:7.2f} s CPU  {peak:7.0f} MB peak{bounded}")
        print(f"  html report size         {(work / 'r1.html').stat().st_size / 1e6:7.2f} MB")
        pages = viewer_pages(work, env)
        for name in ("run page", "run page, failed only", "one result"):
            cpu, wall, size = pages[name]
            bound = (f"(bound: 2 s CPU, 1 MB: {'ok' if cpu < 2 and size < 1e6 else 'OVER'})" if name == "run page"
                     else f"(bound: 0.3 s: {'ok' if wall < 0.3 else 'OVER'})" if name == "one result" else "")
            print(f"  viewer {name:<17} {cpu:7.2f} s CPU  {wall:7.2f} s wall  {size / 1e6:7.3f} MB  {bound}")
        peak = pages["peak"][0]
        print(f"  viewer process peak      {peak:7.0f} MB  (bound: 150 MB: {'ok' if peak < 150 else 'OVER'})")


if __name__ == "__main__":
    main()
