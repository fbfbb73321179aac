import os

import pytest

# ==== BEGIN fake_llm fixtures (owner: tests/fake_openai.py) =====================
# One fake OpenAI server process per session; `fake_llm` resets counts and
# behaviour before every test, so each test starts clean.
from tests.fake_openai import FakeLLM, spawn_server

# Loopback must never be sent to an env-configured proxy (httpx honours NO_PROXY).
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var), "127.0.0.1", "localhost"]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def fake_llm_server():
    srv = spawn_server()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def fake_llm(fake_llm_server) -> FakeLLM:
    fake_llm_server.reset()
    return fake_llm_server
# ==== END fake_llm fixtures =====================================================
