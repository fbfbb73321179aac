"""A local model past one process: the packaged GGUF served by llama-cpp-python's own
OpenAI-compatible server (its `server` extra) on loopback, evaluated through an alias."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python's server extra is not installed")

N_CTX = 512


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    from promptlab.providers.local import LocalExtraMissingError, packaged_model_path

    try:
        model_path = packaged_model_path()
    except LocalExtraMissingError as exc:
        pytest.skip(str(exc))
    port = free_port()
    log = open(tmp_path_factory.mktemp("llama") / "server.log", "w+")  # a pipe left unread would fill up
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--model_alias", "gemma",
         "--chat_format", "gemma", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(N_CTX),
         "--n_threads", "1"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        for _ in range(600):  # loading the model takes seconds
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"llama_cpp.server exited: {log.read()[-2000:]}")
            try:
                opener.open(base + "/models", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.mark.slow
def test_an_eval_through_llama_cpps_own_server(workspace, llama_server, call_path):
    workspace.write("promptlab.toml", f'[models.gemma]\nmodel = "openai/gemma"\napi_base = "{llama_server}"\n')
    texts = [f"The film number {i} was {'wonderful' if i % 2 else 'dreadful'}." for i in range(40)]
    rows = [{"text": t, "label": "positive" if "wonderful" in t else "negative", "split": "test"} for t in texts]
    rows.append({"text": "word " * (N_CTX + 200), "label": "positive", "split": "val"})  # past the context
    workspace.write("cases.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    for args in (("project", "add", "demo"),
                 ("signature", "add", "sentiment", "-i", "text", "-o", "label:enum:positive,negative"),
                 ("case", "import", "cases.jsonl"),
                 ("prompt", "add", "p", "--signature", "sentiment", "--template", "Review: {{ text }}",
                  "--param", "max_tokens=4", "--param", "temperature=0")):
        assert workspace.cli(*args).code == 0, args

    first = workspace.cli("eval", "--prompt", "p", "--model", "gemma", "--split", "test", "--concurrency", "4",
                          "--json")
    assert first.code in (0, 1), first.stderr  # the 270M model's answers may miss a gate, never error
    run = json.loads(first.stdout)["runs"][0]
    assert (run["n"], run["errors"], run["provider_calls"]) == (40, 0, 40)

    again = json.loads(workspace.cli("eval", "--prompt", "p", "--model", "gemma", "--split", "test",
                                     "--json").stdout)["runs"][0]
    assert (again["n"], again["errors"], again["cached"], again["provider_calls"]) == (40, 0, 40, 0)

    long = workspace.cli("eval", "--prompt", "p", "--model", "gemma", "--split", "val", "--name", "long")
    assert long.code == 3  # its only item failed
    assert workspace.rows("select r.error_kind, r.attempts from results r join runs on runs.id = r.run_id "
                          "where runs.name = 'long'") == [("context_window", 1)]
