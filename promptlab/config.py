"""promptlab.toml (found from the current directory upward, like git) + env → Settings.

Env overrides: PROMPTLAB_CONFIG (the file), PROMPTLAB_DB (store path),
PROMPTLAB_MODEL (default model), PROMPTLAB_CONCURRENCY; PROMPTLAB_PROJECT (the current
project) is read where a command resolves its project (cli.common.State.project_id). API keys are never
read from the file: a model names the env variable that holds its key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from promptlab import redact
from promptlab.errors import UnknownModelError, UsageError

CONFIG_NAME = "promptlab.toml"
DEFAULT_DB = ".promptlab/promptlab.db"
LOCAL_MODEL = "local/gemma-3-270m"


# The variable each common provider reads its key from, checked before any call (a fast
# check: litellm's own validate_environment covers the rest once litellm is loaded).
PROVIDER_KEYS = {
    "openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY", "groq": "GROQ_API_KEY", "cohere": "COHERE_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY", "openrouter": "OPENROUTER_API_KEY", "xai": "XAI_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY", "fireworks_ai": "FIREWORKS_AI_API_KEY",
    "perplexity": "PERPLEXITYAI_API_KEY",
}


# What a prompt version's (or a file's) `params` may carry: sampling settings only. Anything else
# (api_base, api_key, extra_headers, base_url…) would redirect the call or the key it carries.
SAMPLING_PARAMS = frozenset({
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens", "stop", "seed",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "logprobs",
    "top_logprobs", "response_format", "reasoning_effort"})


# what a call carries besides: a version's own tools and tool_choice (prompting.tools.request_params)
# and, for vLLM, structured decoding's guided fields (prompting.structured.with_decoding): both are
# built from the version's checked content, never taken from its params
CALL_FIELDS = frozenset({"tools", "tool_choice", "extra_body"})


def check_params(params: dict[str, Any], where: str, also: frozenset[str] = frozenset()) -> None:
    """Bad input (exit 2 naming the key) unless every key of `params` is a sampling parameter (or
    in `also`)."""
    other = sorted(str(k) for k in params if k not in SAMPLING_PARAMS and k not in also)
    if other:
        raise UsageError(f"{where}: params.{redact.redact(other[0])} is not a sampling parameter "
                         f"(allowed: {', '.join(sorted(SAMPLING_PARAMS))}); drop it, or set it on the "
                         f"model in {CONFIG_NAME}")


AUTO = "auto"
# calls in flight: a number, or "auto" (AIMD: halved on a 429, grown on success; lm.AdaptiveLimit)
Concurrency = Annotated[int, Field(ge=1)] | Literal["auto"]


def parse_concurrency(text: str, where: str) -> int | str:
    """'auto' or a whole number of at least 1 (bad input: one line naming `where`)."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{where} must be a whole number of at least 1, or auto (got '{text}')")
    return value


class ModelConfig(BaseModel):
    """One model alias: where to call it and how hard."""

    model_config = ConfigDict(extra="forbid")
    alias: str = ""
    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    rpm: float | None = Field(default=None, gt=0)  # 0 would silently mean no limit
    tpm: float | None = Field(default=None, gt=0)
    concurrency: Concurrency | None = None
    timeout: float | None = Field(default=None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)
    fast_path: bool = True  # an OpenAI-compatible api_base is called directly, not through litellm
    # how a structured prompt constrains this model's decoding (prompting.structured); None: by route
    structured_outputs: Literal["response_format", "vllm", "vllm_guided", "none"] | None = None

    @field_validator("api_base")
    @classmethod
    def _no_credentials(cls, value: str | None, info: Any) -> str | None:
        # user:pass@ in a URL would be stored with every run and printed in errors
        if value and "@" in urlsplit(value).netloc:
            alias = info.data.get("alias") or info.data.get("model") or "?"
            raise UsageError(f"models.{alias}.api_base carries credentials; put the key in api_key_env")
        return value

    def api_key(self) -> str | None:
        """The key from the environment; an error if the named variable is unset."""
        if self.api_key_env:
            redact.remember([self.api_key_env])
            key = os.environ.get(self.api_key_env)
            if not key:
                raise UsageError(
                    f"model '{self.alias or self.model}': environment variable {self.api_key_env} "
                    f"is not set; export it with the provider's API key"
                )
            return key
        # OpenAI-compatible local servers (vLLM, Ollama, test servers) accept any key.
        if self.api_base:
            return "none"
        variable = PROVIDER_KEYS.get(self.route)
        if variable and not os.environ.get(variable):
            raise UsageError(f"model '{self.alias or self.model}': environment variable {variable} is "
                             f"not set; export it with the provider's API key (or name another "
                             f"variable with api_key_env)")
        return None

    @model_validator(mode="after")
    def _local_one_at_a_time(self) -> "ModelConfig":
        # the embedded model answers one call at a time: more in flight only queue (their latency
        # then counts the wait, and a queued call can time out)
        if self.route == "local" and self.concurrency is None:
            self.concurrency = 1
        return self

    @property
    def route(self) -> str:
        """The provider part of the model string (part of the cache key)."""
        return self.model.split("/", 1)[0] if "/" in self.model else ""


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = "local"
    project: str | None = None       # the current project unless PROMPTLAB_PROJECT or `project use` says otherwise
    concurrency: Concurrency = 8
    timeout: float = Field(default=60.0, gt=0)
    max_reply_bytes: int = Field(default=8 * 1024 ** 2, ge=1024)  # a longer reply is an item error
    retries: int = Field(default=8, ge=0)
    failure_threshold: float = Field(default=0.5, gt=0, le=1)
    failure_min_items: int = Field(default=10, ge=1)
    judge_model: str = "local"       # the judge metric's model unless it names one
    embedding_model: str = "local"   # embedding_similarity's model unless it names one


class BatchConfig(BaseModel):
    """Batch mode (`eval --batch`, `mode: batch|auto`): the provider's per-batch limits (OpenAI's by
    default), how often to poll, when `auto` picks it, and how often an item is resubmitted."""

    model_config = ConfigDict(extra="forbid")
    max_requests: int = Field(default=50_000, ge=1)        # requests per batch
    max_bytes: int = Field(default=200 * 1024 ** 2, ge=1)  # bytes per input file
    poll_s: float = Field(default=30.0, gt=0)              # seconds between status checks
    auto_threshold: int = Field(default=200, ge=1)         # `auto`: batch from this many pending items
    max_attempts: int = Field(default=3, ge=1)             # batches an item may go through unanswered


class TrustConfig(BaseModel):
    """`[trust]`: endpoints and key variables that files from elsewhere (experiment files) may name
    besides those of [models] — the user's explicit consent, as `--allow-endpoints` is for one run."""

    model_config = ConfigDict(extra="forbid")
    api_bases: list[str] = Field(default_factory=list)
    api_key_envs: list[str] = Field(default_factory=list)


def _base(url: str) -> str:
    """An api_base as compared: scheme and host case-folded, no trailing slash."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


class TracesConfig(BaseModel):
    """[traces]: where OpenTelemetry traces go (OTEL_EXPORTER_OTLP_ENDPOINT overrides the file)."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str | None = None      # an OTLP/HTTP base URL, e.g. http://localhost:4318
    service_name: str = "promptlab"

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise UsageError(f"traces.endpoint: '{value}' is not an http(s) URL; give e.g. http://localhost:4318")
        return value


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = DEFAULT_DB


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store: StoreConfig = StoreConfig()
    defaults: Defaults = Defaults()
    batch: BatchConfig = BatchConfig()
    traces: TracesConfig = TracesConfig()
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    trust: TrustConfig = TrustConfig()
    allow_endpoints: bool = False    # `run --allow-endpoints`: this run's files may name any endpoint
    root: Path = Path(".")           # directory of promptlab.toml (or cwd)
    source: Path | None = None       # the file read, if any

    @property
    def db_path(self) -> Path:
        override = os.environ.get("PROMPTLAB_DB")
        path = Path(override) if override else Path(self.store.path)
        return path if path.is_absolute() else (Path.cwd() if override else self.root) / path

    def concurrency(self, *given: Concurrency | None) -> Concurrency:
        """The first concurrency given (a flag before a file's setting or a resumed run's), else the
        workspace default: every command resolves it here."""
        return next((c for c in given if c), self.defaults.concurrency)

    def resolve_model(self, name: str | None) -> ModelConfig:
        """An alias from the config, or a LiteLLM model string (provider/model)."""
        name = name or self.defaults.model
        if name in self.models:
            return self.models[name]
        if name == "local":  # the embedded model needs no config
            return ModelConfig(alias="local", model=LOCAL_MODEL)
        if "/" in name:
            # a model string that an alias names gets that alias's settings (params, limits, key)
            named = [m for m in self.models.values() if m.model == name]
            return named[0] if len(named) == 1 else ModelConfig(alias=name, model=name)
        known = ", ".join(sorted(self.models)) or "none defined"
        raise UnknownModelError(
            f"unknown model '{name}' (aliases: {known}): add [models.{name}] to "
            f"{self.source or CONFIG_NAME} or give a LiteLLM model such as openai/gpt-4o-mini"
        )

    def check_destination(self, model: ModelConfig, where: str) -> None:
        """A key leaves only for where the user sent it: refuse (exit 2, naming the field) a model
        from a file or a shared database that names an api_base or api_key_env not configured in
        promptlab.toml for that route ([models] or [trust]), unless `allow_endpoints`."""
        if self.allow_endpoints:
            return
        configured = [m for m in self.models.values() if m.route == model.route]
        trusted_bases = {_base(b) for b in self.trust.api_bases}
        if model.api_base:
            base = _base(model.api_base)
            same = [m for m in configured if m.api_base and _base(m.api_base) == base]
            if not same and base not in trusted_bases:
                raise UsageError(f"{where}.api_base: {model.api_base} is not an endpoint configured in "
                                 f"{self.source or CONFIG_NAME}; no key or case is sent there unless you "
                                 f"add it to [trust] api_bases (or pass --allow-endpoints)")
        else:
            same = [m for m in configured if not m.api_base]
        if model.api_key_env:
            envs = {m.api_key_env for m in same if m.api_key_env} | set(self.trust.api_key_envs)
            if not model.api_base and model.route in PROVIDER_KEYS:
                envs.add(PROVIDER_KEYS[model.route])
            if model.api_key_env not in envs:
                raise UsageError(f"{where}.api_key_env: {model.api_key_env} is not the key variable "
                                 f"configured for this endpoint in {self.source or CONFIG_NAME}; its value "
                                 f"is not sent unless you add it to [trust] api_key_envs (or pass "
                                 f"--allow-endpoints)")


def find_config(start: Path | None = None) -> Path | None:
    explicit = os.environ.get("PROMPTLAB_CONFIG")
    if explicit:
        return Path(explicit)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def load_settings(start: Path | None = None) -> Settings:
    path = find_config(start)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"{path}: config file not found; unset PROMPTLAB_CONFIG or create it") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: invalid TOML ({exc}); fix the syntax") from None
    for alias, model in (data.get("models") or {}).items():
        if isinstance(model, dict):
            model.setdefault("alias", alias)
    try:
        settings = Settings(**data, root=path.parent if path else Path.cwd(), source=path)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UsageError(f"{path or CONFIG_NAME}: [{where}] {err['msg']}; fix that key") from None
    except UsageError as exc:  # raised as is by a validator (an api_base with credentials)
        raise UsageError(f"{path or CONFIG_NAME}: {exc}") from None
    redact.remember(m.api_key_env for m in settings.models.values())
    if os.environ.get("PROMPTLAB_MODEL"):
        settings.defaults.model = os.environ["PROMPTLAB_MODEL"]
    if os.environ.get("PROMPTLAB_CONCURRENCY"):
        settings.defaults.concurrency = parse_concurrency(os.environ["PROMPTLAB_CONCURRENCY"],
                                                          "PROMPTLAB_CONCURRENCY")
    return settings
