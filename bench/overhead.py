"""promptlab's CPU per call: the same calls at concurrency C against the loopback server through
`promptlab eval --no-cache` (the direct path and the LiteLLM path), bare `litellm.acompletion`,
the raw openai SDK, DSPy's `LM.acall` (when a python that imports dspy is at hand: see
bench/optimize.py --setup-dspy, or PROMPTLAB_DSPY_PYTHON) and a bare aiohttp loop: the floor,
what sending the request and reading the reply cost with nothing else.

Each contender runs as its own process, twice: with N calls and with N/10. Its CPU seconds (user
+ system, from wait4) differ by the work of the extra calls alone, so imports and start-up cancel
out: per-call CPU = (CPU(N) - CPU(N/10)) / (N - N/10). The server runs in another process and is
not counted. Prints per-call CPU and the ratios the issue sets targets for.

    python bench/overhead.py [--n 1000] [--concurrency 16] [--latency-ms 20] [--rounds 1]

Each eval does more per call than the others (render the prompt, parse and score the reply,
store the result, the progress): its CPU is set beside theirs whole.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.optimize import dspy_python  # noqa: E402
from tests.fake_openai import start_server  # noqa: E402

CALLS = r"""
import asyncio, json, os, sys, time
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
kind, base, n, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
texts = [f"review number {i}: great" for i in range(n)]
if kind == "litellm":
    import litellm
    async def call(t):
        r = await litellm.acompletion(model="openai/fake", api_base=base, api_key="none",
                                      messages=[{"role": "user", "content": "Review: " + t}],
                                      num_retries=0, max_retries=0)
        return r.choices[0].message.content
elif kind == "dspy":
    import dspy
    lm = dspy.LM("openai/fake", api_base=base, api_key="none", cache=False, num_retries=0)
    async def call(t):
        return (await lm.acall(messages=[{"role": "user", "content": "Review: " + t}]))[0]
elif kind == "aiohttp":
    import aiohttp
    session = None
    async def call(t):
        global session
        session = session or aiohttp.ClientSession()
        body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "Review: " + t}]}).encode()
        async with session.post(base + "/chat/completions", data=body, headers={
                "Authorization": "Bearer none", "Content-Type": "application/json"}) as r:
            return json.loads(await r.read())["choices"][0]["message"]["content"]
else:
    import openai
    client = openai.AsyncOpenAI(base_url=base, api_key="none", max_retries=0)
    async def call(t):
        r = await client.chat.completions.create(model="fake",
                                                 messages=[{"role": "user", "content": "Review: " + t}])
        return r.choices[0].message.content
async def main():
    sem = asyncio.Semaphore(conc)
    async def one(t):
        async with sem:
            return await call(t)
    out = await asyncio.gather(*(one(t) for t in texts))
    assert len(out) == n
asyncio.run(main())
"""


def cpu_seconds(cmd: list[str], **kw) -> float:
    """User + system CPU seconds of a child process run to the end (its own children included)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, **kw)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd[:4])} failed: {err.read().decode()[-2000:]}")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="repeat and keep each one's lowest CPU")
    args = parser.parse_args()
    small = max(1, args.n // 10)

    with start_server("--latency-ms", str(args.latency_ms), "--default-reply", "positive") as server, \
            tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "promptlab.toml").write_text(
            f'[models.fake]\nmodel = "openai/fake"\napi_base = "{server.base_url}"\n')
        (work / "cases.jsonl").write_text("".join(
            json.dumps({"text": f"review number {i}: great", "label": "positive"}) + "\n" for i in range(args.n)))
        env = {**os.environ, "PROMPTLAB_CONFIG": str(work / "promptlab.toml"), "CI": "true"}
        cli = [sys.executable, "-m", "promptlab"]
        for setup in (["project", "add", "bench"], ["signature", "add", "s", "-i", "text", "-o", "label"],
                      ["case", "import", "cases.jsonl"],
                      ["prompt", "add", "p", "--signature", "s", "--template", "Review: {{ text }}"]):
            subprocess.run(cli + setup, cwd=work, env=env, check=True, capture_output=True)

        def contender(name: str, n: int) -> float:
            if name.startswith("promptlab"):
                flag = "1" if name == "promptlab fast" else "0"
                return cpu_seconds(cli + ["eval", "--prompt", "p", "--model", "fake", "--no-cache",
                                          "--concurrency", str(args.concurrency), "--limit", str(n)],
                                   cwd=work, env={**env, "PROMPTLAB_FAST_PATH": flag})
            python = str(dspy) if name == "dspy" else sys.executable
            return cpu_seconds([python, "-c", CALLS, name, server.base_url, str(n), str(args.concurrency)])

        dspy = dspy_python()
        names = ("promptlab fast", "promptlab litellm", "litellm", "openai", *(("dspy",) if dspy else ()), "aiohttp")
        per_call: dict[str, float] = {}
        for _ in range(args.rounds):
            for name in names:
                server.reset()
                extra = contender(name, args.n) - contender(name, small)
                assert server.stats()["by_status"] == {"200": args.n + small}, server.stats()["by_status"]
                per_call[name] = min(per_call.get(name, float("inf")), extra / (args.n - small))

    print(f"CPU per call (marginal, {args.n} vs {small} calls), concurrency {args.concurrency}, "
          f"server latency {args.latency_ms} ms")
    for name in names:
        print(f"  {name:<19}{per_call[name] * 1000:8.3f} ms")
    if not dspy:
        print("  dspy                   (no python that imports dspy: bench/optimize.py --setup-dspy)")
    print(f"promptlab fast path / raw openai SDK   {per_call['promptlab fast'] / per_call['openai']:.2f}x"
          f"  (target <= 0.6x)")
    print(f"promptlab LiteLLM path / bare litellm  {per_call['promptlab litellm'] / per_call['litellm']:.2f}x"
          f"  (target <= 1.1x)")


if __name__ == "__main__":
    main()
