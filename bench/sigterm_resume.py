"""Two hundred SIGTERMs at random points in real `promptlab eval`, `optimize` and `runs wait`
processes against the loopback server, each followed by a resume; after every round the store
is checked: no finished result lost or changed, none stored twice (tests/sigterm_rounds.py).

    python bench/sigterm_resume.py [--rounds 200] [--seed 20]

The rounds are split evenly over the three commands; each gets its own workspace.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Workspace  # noqa: E402
from tests.fake_openai import start_server  # noqa: E402
from tests.sigterm_rounds import Tally, batch_wait_rounds, eval_rounds, optimize_rounds  # noqa: E402


def workspace(root: Path, fake) -> Workspace:
    """What the tests' `workspace` fixture makes: a promptlab.toml pointing at the fake server."""
    (root / "promptlab.toml").write_text(f'[defaults]\nmodel = "fake"\n\n[models.fake]\nmodel = "openai/fake"\n'
                                         f'api_base = "{fake.base_url}"\n')
    os.chdir(root)
    os.environ["PROMPTLAB_CONFIG"] = str(root / "promptlab.toml")
    os.environ.pop("PROMPTLAB_DB", None)
    fake.reset()
    fake.configure(rules=[["great", "positive"], ["awful", "negative"]], default_reply="neutral")
    return Workspace(root, fake)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    rng = random.Random(args.seed)
    report = {}
    with start_server() as fake, tempfile.TemporaryDirectory() as tmp:
        share = args.rounds // 3
        for name, play, rounds in (("eval", eval_rounds, args.rounds - 2 * share), ("optimize", optimize_rounds, share),
                                   ("runs wait", batch_wait_rounds, share)):
            root = Path(tmp) / name.replace(" ", "-")
            root.mkdir()
            tally, started = Tally(), time.monotonic()
            play(workspace(root, fake), rounds, rng, tally)
            report[name] = {**tally.__dict__, "seconds": round(time.monotonic() - started, 1)}
            print(json.dumps({name: report[name]}), flush=True)
    problems = sum(len(r["problems"]) for r in report.values())
    total = sum(r["rounds"] for r in report.values())
    print(f"{total} SIGTERMs: {sum(r['interrupted'] for r in report.values())} interrupted a command, "
          f"{sum(r['results_checked'] for r in report.values())} finished results checked after them, "
          f"{problems} problems (lost, changed or duplicated results, bad exits)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
