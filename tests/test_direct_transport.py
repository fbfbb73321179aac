"""The direct path's transport is aiohttp alone: an eval on it loads no other HTTP stack (httpx,
the openai SDK, litellm), whose per-request CPU is what the direct path exists to avoid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EVAL_THEN_SAY_WHICH_CLIENTS = """
import sys
from promptlab.cli import main
try:
    main(["eval", "--prompt", "p", "--no-cache"])
except SystemExit as exc:
    assert not exc.code, exc.code
print(" ".join(m for m in ("aiohttp", "httpx", "openai", "litellm") if m in sys.modules))
"""


def test_an_eval_on_the_direct_path_loads_aiohttp_and_no_other_http_client(workspace):
    from tests.test_runs import setup_project

    setup_project(workspace, n=3)
    env = {**os.environ, "PROMPTLAB_CONFIG": str(workspace.root / "promptlab.toml"),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", EVAL_THEN_SAY_WHICH_CLIENTS], cwd=workspace.root, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1].split() == ["aiohttp"]
    assert workspace.fake.stats()["by_status"] == {"200": 3}
