"""`python -m promptlab.providers.local_server ARGS…`: llama-cpp-python's OpenAI-compatible server (the
`server` extra) speaking promptlab's prompt format, so a served GGUF receives the very text the
embedded model does.

The arguments are llama_cpp.server's (`--model`, `--model_alias`, `--host`, `--port`, `--n_ctx`,
`--n_threads`…); `--chat_format` defaults to `promptlab`, registered here: the messages become the
embedded model's plain completion prompt and stops (`providers.local.messages_to_prompt`). The
GGUF's own chat formats are no substitute: `--chat_format gemma` drops the system message, so a
signature's instruction never reached the served model and the same prompt scored differently
in-process and through the server.
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

CHAT_FORMAT = "promptlab"


def format_messages(messages: list[dict[str, Any]], **_: Any) -> Any:
    """The chat format: the embedded model's completion prompt for these messages, and its stops."""
    from llama_cpp import llama_chat_format

    from promptlab.providers.local import DEFAULT_STOPS, merge_stops, messages_to_prompt

    prompt, stops = messages_to_prompt(messages)
    return llama_chat_format.ChatFormatterResponse(prompt=prompt, stop=merge_stops(DEFAULT_STOPS, stops))


def register() -> None:
    """Make `promptlab` a chat format llama-cpp-python knows (in this process)."""
    from llama_cpp import llama_chat_format

    llama_chat_format.register_chat_format(CHAT_FORMAT)(format_messages)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--chat_format" or a.startswith("--chat_format=") for a in args):
        args += ["--chat_format", CHAT_FORMAT]
    try:
        register()
    except ImportError as exc:
        sys.exit(f"promptlab.providers.local_server needs the local and server extras ({exc.name} is missing): "
                 f"pip install -e '.[local,server]'")
    sys.argv = ["python -m promptlab.providers.local_server", *args]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
