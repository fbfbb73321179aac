"""A local model past one process: the packaged GGUF served by llama-cpp-python's own
OpenAI-compatible server (its `server` extra) on loopback, started as the README says
(`python -m promptlab.providers.local_server`), evaluated through an alias; the served model
receives the text the embedded one does."""

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
        [sys.executable, "-m", "promptlab.providers.local_server", "--model", model_path, "--model_alias", "gemma",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(N_CTX), "--n_threads", "1"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        for _ in range(600):  # loading the model takes seconds
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"promptlab.providers.local_server exited: {log.read()[-2000:]}")
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


def test_the_served_format_is_the_embedded_models_prompt_with_the_system_message():
    from llama_cpp import llama_chat_format

    from promptlab.providers.local import DEFAULT_STOPS, messages_to_prompt
    from promptlab.providers.local_server import format_messages

    messages = [{"role": "system", "content": "Label the review: positive or negative."},
                {"role": "user", "content": "Review: loved it"}, {"role": "assistant", "content": "positive"},
                {"role": "user", "content": "Review: hated it"}]
    served = format_messages(messages)
    prompt, stops = messages_to_prompt(messages)
    assert served.prompt == prompt and served.prompt.startswith("Label the review")
    assert served.stop == [*DEFAULT_STOPS, *stops]
    assert "Label the review" not in llama_chat_format.format_gemma(messages).prompt  # the old recipe's loss


@pytest.mark.slow
def test_the_served_model_gets_the_tokens_the_embedded_one_gets(llama_server):
    """What the server's chat handler hands llama.cpp for a conversation with a system message is,
    token for token, the embedded model's prompt (the handler the server process registers, run
    here on the same GGUF)."""
    import llama_cpp

    from promptlab.providers.local import messages_to_prompt, packaged_model_path
    from promptlab.providers.local_server import CHAT_FORMAT, register

    register()
    llm = llama_cpp.Llama(model_path=packaged_model_path(), n_ctx=N_CTX, n_threads=1, verbose=False,
                          chat_format=CHAT_FORMAT)
    sent, original = [], llm.create_completion

    def capture(prompt, **kwargs):
        sent.append(prompt)
        return original(prompt=prompt, **kwargs)

    llm.create_completion = capture
    messages = [{"role": "system", "content": "Answer with one word: positive or negative."},
                {"role": "user", "content": "Review: the soup was cold\nSentiment:"}]
    llm.create_chat_completion(messages=messages, max_tokens=2, temperature=0)
    in_process = llm.tokenize(messages_to_prompt(messages)[0].encode(), add_bos=True, special=True)
    assert sent == [in_process]
    # and the running server counts the same prompt
    body = json.dumps({"model": "gemma", "messages": messages, "max_tokens": 2, "temperature": 0}).encode()
    request = urllib.request.Request(llama_server + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    reply = json.loads(opener.open(request, timeout=300).read())
    assert reply["usage"]["prompt_tokens"] == len(in_process)


@pytest.mark.slow
def test_a_prompt_runs_served_and_in_process_on_the_same_text(workspace, llama_server):
    """The same prompt (a system instruction, a template) on the same cases, through the server and
    in-process: every case's prompt is the same number of tokens (the old recipe's gemma format
    sent no system message at all)."""
    workspace.write("promptlab.toml", f'[models.gemma]\nmodel = "openai/gemma"\napi_base = "{llama_server}"\n'
                                      'params = {temperature = 0, repeat_penalty = 1.0}\n')
    texts = [f"The meal number {i} was {'delicious' if i % 2 else 'awful'}." for i in range(6)]
    workspace.write("cases.jsonl", "".join(json.dumps({"text": t, "label": "positive" if "delicious" in t
                                                       else "negative"}) + "\n" for t in texts))
    for args in (("project", "add", "demo"),
                 ("signature", "add", "sentiment", "-i", "text", "-o", "label:enum:positive,negative",
                  "--instruction", "Answer with one word: positive or negative."),
                 ("case", "import", "cases.jsonl"),
                 ("prompt", "add", "p", "--signature", "sentiment", "--template", "Review: {{ text }}\nSentiment:",
                  "--param", "max_tokens=4")):
        assert workspace.cli(*args).code == 0, args
    result = workspace.cli("eval", "--prompt", "p", "--model", "gemma", "--model", "local", "--json")
    assert result.code in (0, 1), result.stderr
    tokens = {name: workspace.rows("select r.case_id, r.prompt_tokens from results r join runs u "
                                   "on u.id = r.run_id where u.name = ? and r.error is null order by r.case_id",
                                   (name,))
              for name in ("p@1-gemma", "p@1-local")}
    assert len(tokens["p@1-gemma"]) == 6
    assert tokens["p@1-gemma"] == tokens["p@1-local"]
