"""The README's run command, for real: the quickstart on the embedded local model, offline."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from promptlab.providers.llama import llama_available

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not llama_available() and not os.environ.get("CI"),
                                reason="the local extra is not installed")


@pytest.mark.slow  # a minute and more of the real local model
def test_quickstart_few_shot_and_structured_beat_zero_shot_offline(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copy(ROOT / "promptlab.toml", tmp_path / "promptlab.toml")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(PROMPTLAB_CONFIG=str(tmp_path / "promptlab.toml"), HF_HUB_OFFLINE="1",
               NO_PROXY="*", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    cmd = [sys.executable, "-m", "promptlab", "run", "examples/quickstart/experiment.yaml", "--json"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = {r["prompt"]: r for r in json.loads(out.stdout)["runs"]}
    assert runs["zero-shot"]["n"] == runs["few-shot"]["n"] == 48  # the held-out test split
    assert runs["zero-shot"]["errors"] == runs["few-shot"]["errors"] == 0
    zero, few = runs["zero-shot"]["scores"]["exact_match"], runs["few-shot"]["scores"]["exact_match"]
    assert few >= zero + 0.30, (zero, few)
    assert runs["few-shot"]["tokens"]["per_call"] > 0 and runs["few-shot"]["calls_per_s"] > 0
    # the zero-shot prompt decoded to the signature's labels (a llama.cpp grammar): the README's third row
    structured = runs["structured-zero-shot"]
    assert structured["n"] == 48 and structured["errors"] == 0 and structured["parse_failures"] == 0
    assert structured["decoding"] == {"structured": True, "constrained": True, "mechanism": "grammar"}
    assert structured["scores"]["exact_match"] >= 0.75 > zero, (zero, structured["scores"])
    assert (tmp_path / ".promptlab" / "promptlab.db").exists()  # the store from promptlab.toml

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0
    assert all(r["provider_calls"] == 0 for r in json.loads(again.stdout)["runs"])
