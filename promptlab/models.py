"""Plain records shared by every layer: no I/O here."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FieldType = Literal["string", "int", "float", "bool", "list", "json", "enum"]
SPLITS = ("train", "val", "test")


def content_hash(obj: Any) -> str:
    """Stable hash of a JSON-able value (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class FieldSpec(BaseModel):
    """One input or output field of a signature."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    type: FieldType = "string"
    description: str = ""
    choices: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _enum_needs_choices(self) -> "FieldSpec":
        if self.type == "enum" and not self.choices:
            raise ValueError(f"field '{self.name}' is an enum: give it a non-empty 'choices' list")
        if not self.name.isidentifier():
            raise ValueError(f"field name '{self.name}' must be an identifier (letters, digits, _)")
        return self


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
        return self

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


class PromptContent(BaseModel):
    """Everything that makes a prompt version what it is (hashed for identity)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    system: str = ""
    template: str
    demos: tuple[Demo, ...] = ()
    params: dict[str, Any] = Field(default_factory=dict)

    def hash(self) -> str:
        return content_hash(self.model_dump(mode="json"))


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


class Completion(BaseModel):
    """One model reply, as the gateway hands it to the runner."""

    model_config = ConfigDict(frozen=True)
    text: str
    usage: Usage = Usage()
    cached: bool = False
    attempts: int = 1
    latency_ms: float = 0.0
