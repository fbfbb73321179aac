"""Use a stored prompt version from application code.

    import promptlab
    classifier = promptlab.load_prompt("classifier@production", project="reviews")
    messages = classifier.messages(text="The battery died in a day.")  # send with any client
    reply = client.chat.completions.create(model=..., messages=messages,
                                           response_format=classifier.response_format, **classifier.params)
    classifier.parse(reply.choices[0].message.content)

The messages are exactly what `eval` sends for the same inputs: the version's own
signature instruction, system text, demos and template, rendered in the sandbox; a
structured version's `response_format` is the JSON schema `eval` sends with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from promptlab.errors import NotFoundError, UsageError
from promptlab.models import Case, PromptVersion, Signature
from promptlab.prompting.outputs import parse_reply
from promptlab.prompting import images
from promptlab.prompting.structured import response_format
from promptlab.prompting.tools import request_params
from promptlab.prompting.render import demo_text, render_messages


@dataclass(frozen=True)
class LoadedPrompt:
    """A prompt version with the signature it was made with (and its demo selector's pool of cases,
    if it has one): renders messages, parses replies."""

    version: PromptVersion
    signature: Signature | None
    pool: tuple[Case, ...] = ()
    # (model, texts) -> their vectors, for a selector that compares embeddings
    embed: Callable[[str, list[str]], list[list[float]]] | None = None

    @classmethod
    def from_store(cls, store: Any, version: PromptVersion, settings: Any = None) -> "LoadedPrompt":
        """With `settings`, an embedding selector gets its vectors through the store's response cache."""
        selector = version.content.demo_selector
        pool = tuple(store.cases_by_id(store.project_id(version.project), selector.pool).values()) \
            if selector is not None else ()
        embed = partial(_embed, store.path, settings) if settings is not None else None
        return cls(version, store.prompt_signature(version), pool, embed)

    @property
    def ref(self) -> str:
        return self.version.ref

    @property
    def params(self) -> dict[str, Any]:
        """The model parameters the version carries (temperature, max_tokens…), and its `tools` and
        `tool_choice` when it has them: `litellm.completion(model, messages=p.messages(…), **p.params)`."""
        return request_params(self.version.content, dict(self.version.content.params))

    @property
    def response_format(self) -> dict[str, Any] | None:
        """A structured version's `response_format` (the signature's outputs as a JSON schema), the
        object `eval` sends to an OpenAI-compatible model, a LiteLLM provider or the embedded model;
        None for a version that is not structured."""
        if not self.version.content.structured or self.signature is None:
            return None
        return response_format(self.signature)

    def params_for(self, model: Any) -> dict[str, Any]:
        """Everything `eval` sends to `model` (a config.ModelConfig) beside the messages: `params`, and a
        structured version's decoding in that model's mechanism (UsageError if it has none)."""
        from promptlab.evaluation.plan import call_params, run_decoding

        return call_params(self.version, dict(self.version.content.params),
                           run_decoding(self.version, self.signature, model))

    def messages(self, **inputs: Any) -> list[dict[str, Any]]:
        """The chat messages for these inputs (every input of the signature is needed; an image
        input is a data: URI or an https URL, a file path is read from the working folder)."""
        return self.render(inputs)

    def render(self, inputs: dict[str, Any], *, case_id: int | None = None) -> list[dict[str, Any]]:
        """`messages`, for stored case `case_id` too: a demo selector never picks a case as its own demo."""
        if self.signature is not None:
            names = self.signature.input_names
            unknown = [k for k in inputs if k not in names]
            missing = [n for n in names if n not in inputs]
            if unknown or missing:
                wrong = f"unknown input '{unknown[0]}'" if unknown else f"missing input '{missing[0]}'"
                raise UsageError(f"{self.ref}: {wrong}; signature '{self.signature.name}' takes "
                                 f"{', '.join(names)}")
            try:
                inputs = images.resolve_inputs(inputs, self.signature.inputs, None)
            except ValueError as exc:
                raise UsageError(f"{self.ref}: {exc}") from None
        return render_messages(self.version.content, self.signature, inputs, case_id=case_id,
                               resolve=lambda ids: self.pool, vectors=self._vectors(inputs))

    def _vectors(self, inputs: dict[str, Any]) -> dict[str, list[float]] | None:
        """The embeddings of the pool's texts and the input's, as a run computes them."""
        selector = self.version.content.demo_selector
        if selector is None or selector.similarity != "embedding":
            return None
        if self.embed is None:
            raise UsageError(f"{self.ref}: its demo selector compares embeddings; load it with "
                             f"load_prompt (which calls {selector.embedding_model}) to render it")
        texts = sorted({demo_text(c.inputs, self.signature) for c in self.pool}
                       | {demo_text(inputs, self.signature)})
        return dict(zip(texts, self.embed(selector.embedding_model, texts)))

    def parse(self, text: str) -> dict[str, Any]:
        """A reply's output fields, checked against the signature; ValueError when it does not fit."""
        reply = parse_reply(text, self.signature)
        if reply.parse_error:
            raise ValueError(f"{self.ref}: the reply does not fit the signature: {reply.parse_error}")
        return reply.values

    def as_entry(self) -> dict[str, Any]:
        """The version as an experiment file's `prompts:` entry (running it recreates this version)."""
        entry = {"name": self.version.name, **self.version.content.as_json(),
                 "message": self.version.message}
        return {k: v for k, v in entry.items() if v or k in ("name", "template")}  # defaults left out


def load_prompt(ref: str, *, project: str | None = None, db: str | Path | None = None) -> LoadedPrompt:
    """NAME, NAME@VERSION or NAME@LABEL from the database (default: the one promptlab.toml names)."""
    from promptlab.config import load_settings
    from promptlab.store import open_store

    settings = load_settings()
    path = Path(db) if db is not None else settings.db_path
    if not path.exists():
        raise NotFoundError(f"no promptlab database at {path}; pass db= or run `promptlab init`")
    store = open_store(path)
    try:
        return LoadedPrompt.from_store(store, store.prompt(store.project_id(project), ref), settings)
    finally:
        store.db.close()


def _embed(path: Path, settings: Any, model: str, texts: list[str]) -> list[list[float]]:
    """Vectors through the database's response cache (opened for the call: a loaded prompt holds
    no connection)."""
    from promptlab.evaluation.embeddings import embed_texts
    from promptlab.store import open_store

    store = open_store(path)
    try:
        return embed_texts(store, settings, model, texts)
    finally:
        store.db.close()
