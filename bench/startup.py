"""How long `runs list` and `prompt list` take to start, next to `--help`.

    python bench/startup.py [-n 15]

Runs each command N times, in turn, in a fresh workspace (a temp dir with one project) and prints the
median wall time, the median CPU seconds (user + system of the child, from getrusage), and each
command's ratio to `--help`. Also says whether litellm or the runner got imported.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {"--help": ["--help"], "runs list": ["runs", "list"], "prompt list": ["prompt", "list"]}


def run(args: list[str], cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `python -m promptlab ARGS`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "promptlab", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "120"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def imports(args: list[str], cwd: str) -> set[str]:
    """The top-level packages of interest that the command imported."""
    probe = ("import sys, runpy; sys.argv = ['promptlab', *sys.argv[1:]]\n"
             "try: runpy.run_module('promptlab', run_name='__main__')\n"
             "except SystemExit: pass\n"
             "print(' '.join(m for m in ('litellm', 'promptlab.evaluation.runner', 'numpy') if m in sys.modules), "
             "file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, *args], cwd=cwd, capture_output=True, text=True, check=True)
    return set(done.stderr.split())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=15, help="runs per command (default 15)")
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as cwd:
        subprocess.run([sys.executable, "-m", "promptlab", "init"], cwd=cwd, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "promptlab", "project", "add", "bench"], cwd=cwd, check=True,
                       capture_output=True)
        for args in COMMANDS.values():  # warm the bytecode cache and the disk
            run(args, cwd)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
        for _ in range(n):  # round-robin: a load that comes and goes on a shared machine hits every command
            for name, args in COMMANDS.items():
                times[name].append(run(args, cwd))
        medians = {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
                   for name, t in times.items()}
        base_wall, base_cpu = medians["--help"]
        print(f"{'command':<12} {'wall s':>7} {'cpu s':>7} {'× help (wall)':>14} {'× help (cpu)':>13}  imports")
        for name, (wall, cpu) in medians.items():
            seen = ", ".join(sorted(imports(COMMANDS[name], cwd))) or "-"
            print(f"{name:<12} {wall:7.3f} {cpu:7.3f} {wall / base_wall:14.2f} {cpu / base_cpu:13.2f}  {seen}")


if __name__ == "__main__":
    main()
