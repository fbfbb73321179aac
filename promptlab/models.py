"""Plain records shared by every layer: no I/O here."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

FieldType = Literal["string", "int", "float", "bool", "list", "json", "enum", "messages", "image", "tool_call"]
INPUT_ONLY = ("messages", "image")  # types an output cannot have: a reply is neither turns nor a picture
ROLES = ("user", "assistant")  # the turns a `messages` input may hold (the version owns the system text)
SPLITS = ("train", "val", "test")
MAX_DEPTH = 32  # nesting levels a case or demo value may have
_PY_TYPES = {"int": int, "float": (int, float), "bool": bool, "list": list}


def content_hash(obj: Any) -> str:
    """Stable hash of a JSON-able value (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def check_data(value: Any) -> None:
    """ValueError unless value is plain JSON data: string keys, finite numbers, bounded nesting.

    Case and demo values come from files and databases; anything else breaks hashing,
    scoring or the recursion limit later, far from its source."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ValueError(f"is nested more than {MAX_DEPTH} levels deep; flatten it")
            if isinstance(item, dict) and not all(isinstance(k, str) for k in item):
                raise ValueError("has a key that is not a string; quote the key")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"holds {item}, which is not a finite number; give a number")
        elif not (item is None or isinstance(item, (str, int, float))):
            raise ValueError(f"holds a {type(item).__name__} ({str(item)[:40]}), which is not "
                             f"JSON data; quote it")


class FieldSpec(BaseModel):
    """One input or output field of a signature."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    type: FieldType = "string"
    description: str = ""
    choices: tuple[str, ...] | None = None
    lenient: bool = False  # an enum reply may merely mention a choice (see outputs.read_field)

    @model_serializer(mode="wrap")
    def _lenient_only_when_set(self, handler: Any) -> dict[str, Any]:
        """Left out unless set: a signature stored before the option keeps its content (and version)."""
        data = handler(self)
        if not self.lenient:
            data.pop("lenient", None)
        return data

    @model_validator(mode="after")
    def _enum_needs_choices(self) -> "FieldSpec":
        if self.type == "enum" and not self.choices:
            raise ValueError(f"field '{self.name}' is an enum: give it a non-empty 'choices' list")
        if not self.name.isidentifier():
            raise ValueError(f"field name '{self.name}' must be an identifier (letters, digits, _)")
        if self.lenient and self.type != "enum":
            raise ValueError(f"field '{self.name}': lenient is an option of enum fields")
        return self

    def check(self, value: Any) -> None:
        """ValueError unless value has this field's declared type ('string' and 'json' take any)."""
        if self.type == "enum":
            if value not in (self.choices or ()):
                raise ValueError(f"{json.dumps(value, ensure_ascii=False)[:40]} is not one of "
                                 f"{', '.join(self.choices or ())}")
        elif self.type in _SHAPES:
            _SHAPES[self.type](value)
        elif self.type in _PY_TYPES and (isinstance(value, bool) != (self.type == "bool")
                                         or not isinstance(value, _PY_TYPES[self.type])):
            article = "an" if self.type == "int" else "a"
            raise ValueError(f"{json.dumps(value, ensure_ascii=False)[:40]} is not {article} {self.type}")


def _check_turns(value: Any) -> None:
    if not isinstance(value, list):
        raise ValueError("is not a list of {role, content} turns")
    for i, turn in enumerate(value, start=1):
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            raise ValueError(f"turn {i} is not an object with exactly 'role' and 'content'")
        if turn["role"] not in ROLES:
            raise ValueError(f"turn {i} has role {json.dumps(turn['role'])[:40]}; use user or assistant")
        if not isinstance(turn["content"], str):
            raise ValueError(f"turn {i}'s content is not text")


def _check_image(value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("is not an image: give a file path, an https:// URL or a data: URI")


def _check_call(value: Any) -> None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"] \
            or not isinstance(value.get("arguments", {}), dict) or set(value) - {"name", "arguments"}:
        raise ValueError('is not a tool call: write {"name": "...", "arguments": {...}}')


_SHAPES = {"messages": _check_turns, "image": _check_image, "tool_call": _check_call}


def check_tools(tools: tuple[dict[str, Any], ...], tool_choice: Any) -> None:
    """ValueError unless `tools` are OpenAI function-tool specs with distinct names and
    `tool_choice` is auto/none/required or names one of them."""
    names: list[str] = []
    for i, tool in enumerate(tools, start=1):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise ValueError(f"tools[{i}] is not {{type: function, function: {{name, description, "
                             f"parameters}}}}")
        name = function.get("name")
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ValueError(f"tools[{i}].function.name must be letters, digits, _ or -")
        if not isinstance(function.get("parameters", {}), dict):
            raise ValueError(f"tools[{i}].function.parameters must be a JSON schema object")
        if not isinstance(function.get("description", ""), str):
            raise ValueError(f"tools[{i}].function.description must be text")
        if name in names:
            raise ValueError(f"tools[{i}]: a second tool named '{name}'; tool names must differ")
        names.append(name)
    if tool_choice is None:
        return
    if not tools:
        raise ValueError("tool_choice needs tools; add tools or drop tool_choice")
    if tool_choice in ("auto", "none", "required"):
        return
    chosen = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) \
        and tool_choice.get("type") == "function" and isinstance(tool_choice.get("function"), dict) else None
    if chosen not in names:
        raise ValueError("tool_choice must be auto, none, required or {type: function, function: "
                         "{name: <one of the tools>}}")


def check_values(values: dict[str, Any], fields: Iterable[FieldSpec], kind: str) -> None:
    """ValueError naming the first value that is not plain data of its field's declared type."""
    for name, value in values.items():
        try:
            check_data(value)
        except ValueError as exc:
            raise ValueError(f"{kind} '{name}' {exc}") from None
    for spec in fields:
        if spec.name in values:
            try:
                spec.check(values[spec.name])
            except ValueError as exc:
                raise ValueError(f"{kind} '{spec.name}': {exc}; fix the value") from None


class Signature(BaseModel):
    """A DSPy-style contract: what goes in, what must come out."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    instruction: str = ""
    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]

    @field_validator("inputs", "outputs", mode="before")
    @classmethod
    def _names_to_fields(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _non_empty(self) -> "Signature":
        if not self.inputs:
            raise ValueError("a signature needs at least one input field")
        if not self.outputs:
            raise ValueError("a signature needs at least one output field")
        wrong = next((f for f in self.outputs if f.type in INPUT_ONLY), None)
        if wrong is not None:
            raise ValueError(f"output field '{wrong.name}' has type {wrong.type}, which only an input "
                             f"can have; use string, json or tool_call")
        return self

    def fields_of(self, kind: str) -> list[str]:
        """The names of the inputs of this type, in signature order."""
        return [f.name for f in self.inputs if f.type == kind]

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [f.name for f in self.outputs]


class SignatureVersion(BaseModel):
    """One immutable version of a signature: what the prompt versions made with it send."""

    model_config = ConfigDict(frozen=True)
    id: int
    version: int
    signature: Signature
    created_at: str = ""

    @property
    def ref(self) -> str:
        return f"{self.signature.name}@{self.version}"


class Demo(BaseModel):
    """A few-shot example: inputs and the outputs we want to see."""

    model_config = ConfigDict(frozen=True)
    inputs: dict[str, Any]
    outputs: dict[str, Any]


class DemoSelector(BaseModel):
    """Per-input demos instead of a fixed list: the `k` cases of `pool` nearest to the input
    (DSPy's KNNFewShot). The pool is case ids and the rest are settings, so a version that
    carries a selector is as immutable as one with fixed demos; `render.select_demos` picks them."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["knn"] = "knn"
    k: int = Field(ge=1, le=64)
    pool: tuple[int, ...] = Field(min_length=1)  # case ids, sorted: the order carries no meaning
    balance: bool = False       # labels as even as the pool allows among the k
    similarity: Literal["lexical", "embedding"] = "lexical"  # rapidfuzz token-set ratio, or cosine
    embedding_model: str | None = None  # the model alias (or LiteLLM model) of similarity "embedding"

    @field_validator("pool")
    @classmethod
    def _sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _embedding_needs_a_model(self) -> "DemoSelector":
        if (self.similarity == "embedding") != bool(self.embedding_model):
            raise ValueError("demo_selector: similarity 'embedding' needs an embedding_model (and only it does)")
        return self


class PromptContent(BaseModel):
    """Everything that makes a prompt version what it is (hashed for identity)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    system: str = ""
    template: str
    demos: tuple[Demo, ...] = ()
    params: dict[str, Any] = Field(default_factory=dict)
    demo_selector: DemoSelector | None = None  # per-input demos (then no fixed demos)
    tools: tuple[dict[str, Any], ...] = ()  # OpenAI function-tool specs the model may call
    tool_choice: str | dict[str, Any] | None = None  # auto, none, required or one named tool
    # the signature drives the decoder (prompting.structured): a JSON schema, grammar or choice list
    structured: bool = False
    # a model that cannot constrain its decoding is called unconstrained (the run says so)
    # instead of refused
    structured_fallback: bool = False

    @model_validator(mode="after")
    def _demos_or_selector(self) -> "PromptContent":
        if self.demo_selector is not None and self.demos:
            raise ValueError("a prompt carries fixed demos or a demo_selector, not both")
        check_tools(self.tools, self.tool_choice)
        if self.structured_fallback and not self.structured:
            raise ValueError("structured_fallback is for a structured prompt: add structured: true "
                             "or drop structured_fallback")
        return self

    def as_json(self) -> dict[str, Any]:
        """The content as JSON data; tools and tool_choice only when set, so a version without them
        hashes and prints as it always did."""
        data = self.model_dump(mode="json")
        for key, default in (("tools", []), ("tool_choice", None), ("structured", False),
                             ("structured_fallback", False)):
            if data[key] == default:
                del data[key]
        return data

    def hash(self) -> str:
        data = self.as_json()
        if data["demo_selector"] is None:  # versions without one keep the hash they always had
            del data["demo_selector"]
        elif data["demo_selector"]["embedding_model"] is None:  # lexical ones too
            del data["demo_selector"]["embedding_model"]
        return content_hash(data)


class PromptVersion(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    project: str
    name: str
    version: int
    content: PromptContent
    content_hash: str
    signature: str | None = None
    signature_id: int | None = None       # the signature version this prompt version renders with
    signature_version: int | None = None
    parent_id: int | None = None
    made_by: str = "person"
    message: str = ""
    candidate: bool = False               # an optimizer's candidate: never the family's latest
    archived: bool = False                # `prompt delete` of a version in use: never the latest again
    labels: tuple[str, ...] = ()
    created_at: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class Case(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int | None = None
    inputs: dict[str, Any]
    expected: dict[str, Any] = Field(default_factory=dict)
    golden: bool = True
    tags: tuple[str, ...] = ()
    split: Literal["train", "val", "test"] | None = None

    def hash(self) -> str:
        return content_hash({"inputs": self.inputs, "expected": self.expected})


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None  # None: price unknown ("n/a")


MAX_TOKENS = 100_000_000  # tokens one reply may claim: beyond it, a provider's usage is not believed


def token_counts(prompt: Any, completion: Any) -> tuple[int, int, str | None]:
    """A provider's token counts as stored: (prompt, completion, None) when both are whole numbers
    from 0 to MAX_TOKENS (absent counts as 0); else (0, 0, a warning) — usage unknown, its cost
    too, rather than a negative cost, a false "disk full" or a crash on NaN."""
    counts = []
    for value in (prompt, completion):
        if value is None:
            value = 0
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
            shown = str(value)[:40]
            return 0, 0, f"the provider's usage holds {shown!r}, not a token count; usage and cost unknown"
        counts.append(value)
    return counts[0], counts[1], None


class Completion(BaseModel):
    """One model reply, as the gateway hands it to the runner."""

    model_config = ConfigDict(frozen=True)
    text: str
    usage: Usage = Usage()
    cached: bool = False
    attempts: int = 1
    latency_ms: float = 0.0
    warning: str | None = None  # e.g. the provider's usage could not be believed


@dataclass(frozen=True)
class ItemResult:
    """One evaluated item (run × case × repeat) as the runner and the batch executor finish it: the
    row it becomes in `results`, and what progress events carry."""

    run_id: int
    case_id: int
    repeat: int
    output: str = ""
    parsed: dict | None = None
    parse_error: str | None = None
    scores: dict[str, dict] = field(default_factory=dict)
    score: float | None = None
    passed: bool = False
    error_kind: str | None = None
    error: str | None = None
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    cached: bool = False
    attempts: int = 0
    lenient: tuple[str, ...] = ()  # output fields only a lenient rule accepted
    warning: str | None = None  # shown, not stored (the provider's usage could not be believed)

    def row(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "case_id": self.case_id, "repeat": self.repeat,
                "output": self.output, "parsed": None if self.parsed is None else json.dumps(self.parsed),
                "parse_error": self.parse_error, "scores": json.dumps(self.scores), "score": self.score,
                "passed": int(self.passed), "error_kind": self.error_kind, "error": self.error,
                "latency_ms": round(self.latency_ms, 2), "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost": self.cost,
                "cached": int(self.cached), "attempts": self.attempts,
                "lenient": json.dumps(list(self.lenient)) if self.lenient else None}
