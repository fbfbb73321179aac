"""promptlab's overhead: the same N calls at concurrency C against the loopback server
through `promptlab eval --no-cache`, bare `litellm.acompletion`, and the raw openai SDK.

Each contender runs as its own process (imports included) and is timed twice:
the whole process, and the calls alone (timed inside). Prints the ratios.

    python bench/overhead.py [--n 1000] [--concurrency 16] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    start = time.perf_counter()
    out = await asyncio.gather(*(one(t) for t in texts))
    print(json.dumps({"calls_s": time.perf_counter() - start, "n": len(out)}))
asyncio.run(main())
"""


def timed(cmd: list[str], **kw) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, **kw)
    return time.perf_counter() - start, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=20)
    args = parser.parse_args()

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

        results = {}
        for kind in ("litellm", "openai"):
            wall, out = timed([sys.executable, "-c", CALLS, kind, server.base_url, str(args.n),
                               str(args.concurrency)])
            results[kind] = (wall, json.loads(out)["calls_s"])
        server.reset()
        wall, out = timed(cli + ["eval", "--prompt", "p", "--model", "fake", "--no-cache", "--json",
                                 "--concurrency", str(args.concurrency)], cwd=work, env=env)
        run = json.loads(out)["runs"][0]
        assert run["n"] == args.n and run["errors"] == 0, run
        assert server.stats()["total"] == args.n
        results["promptlab"] = (wall, run["calls_per_s"] and args.n / run["calls_per_s"])

    print(f"{args.n} calls, concurrency {args.concurrency}, server latency {args.latency_ms} ms")
    print(f"{'':<12}{'process s':>11}{'calls s':>10}")
    for kind, (wall, calls) in results.items():
        print(f"{kind:<12}{wall:>11.2f}{calls:>10.2f}")
    pl_wall, pl_calls = results["promptlab"]
    for peer in ("litellm", "openai"):
        wall, calls = results[peer]
        print(f"promptlab / {peer:<8} process {pl_wall / wall:.2f}x   calls {pl_calls / calls:.2f}x")


if __name__ == "__main__":
    main()
