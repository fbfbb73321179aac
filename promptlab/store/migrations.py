"""Append-only schema history. A merged migration is never edited: add a new one."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("promptlab")


@migrations()
def m001_core(db: Database) -> None:
    db["projects"].create(
        {"id": int, "name": str, "description": str, "default_model": str,
         "settings": str, "created_at": str},
        pk="id", not_null={"name"}, defaults={"description": "", "settings": "{}"},
    )
    db["projects"].create_index(["name"], unique=True)

    db["signatures"].create(
        {"id": int, "project_id": int, "name": str, "instruction": str,
         "inputs": str, "outputs": str, "content_hash": str, "updated_at": str},
        pk="id", foreign_keys=[("project_id", "projects", "id")],
        not_null={"project_id", "name", "inputs", "outputs"},
    )
    db["signatures"].create_index(["project_id", "name"], unique=True)

    db["prompts"].create(
        {"id": int, "project_id": int, "name": str, "version": int, "signature_id": int,
         "system": str, "template": str, "demos": str, "params": str, "content_hash": str,
         "parent_id": int, "made_by": str, "message": str, "created_at": str},
        pk="id",
        foreign_keys=[("project_id", "projects", "id"), ("signature_id", "signatures", "id"),
                      ("parent_id", "prompts", "id")],
        not_null={"project_id", "name", "version", "template", "content_hash"},
    )
    db["prompts"].create_index(["project_id", "name", "version"], unique=True)
    db["prompts"].create_index(["project_id", "name", "content_hash"])

    db["prompt_labels"].create(
        {"project_id": int, "name": str, "label": str, "prompt_id": int, "updated_at": str},
        pk=("project_id", "name", "label"),
        foreign_keys=[("project_id", "projects", "id"), ("prompt_id", "prompts", "id")],
    )

    db["cases"].create(
        {"id": int, "project_id": int, "inputs": str, "expected": str, "golden": int,
         "tags": str, "split": str, "content_hash": str, "source": str, "created_at": str},
        pk="id", foreign_keys=[("project_id", "projects", "id")],
        not_null={"project_id", "inputs", "content_hash"}, defaults={"golden": 1, "tags": "[]"},
    )
    db["cases"].create_index(["project_id", "content_hash"], unique=True)

    db["runs"].create(
        {"id": int, "project_id": int, "name": str, "prompt_id": int, "model": str,
         "model_name": str, "api_base": str, "params": str, "metrics": str, "case_ids": str,
         "repeat": int, "concurrency": int, "status": str, "error": str,
         "summary": str, "n_results": int, "n_errors": int,
         "prompt_tokens": int, "completion_tokens": int, "cost": float,
         "latency_p50_ms": float, "latency_p95_ms": float,
         "optimization_id": int, "created_at": str, "finished_at": str},
        pk="id",
        foreign_keys=[("project_id", "projects", "id"), ("prompt_id", "prompts", "id")],
        not_null={"project_id", "name", "prompt_id", "model", "status"},
    )
    db["runs"].create_index(["project_id", "name"], unique=True)

    db["results"].create(
        {"id": int, "run_id": int, "case_id": int, "repeat": int, "output": str,
         "parsed": str, "parse_error": str, "scores": str, "score": float, "passed": int,
         "error_kind": str, "error": str, "latency_ms": float, "prompt_tokens": int,
         "completion_tokens": int, "cost": float, "cached": int, "attempts": int,
         "created_at": str},
        pk="id",
        foreign_keys=[("run_id", "runs", "id"), ("case_id", "cases", "id")],
        not_null={"run_id", "case_id", "repeat"},
    )
    db["results"].create_index(["run_id", "case_id", "repeat"], unique=True)

    db["response_cache"].create(
        {"key": str, "kind": str, "model": str, "response": str, "created_at": str,
         "hits": int},
        pk="key", not_null={"response"}, defaults={"hits": 0},
    )

    db["optimizations"].create(
        {"id": int, "project_id": int, "name": str, "strategy": str, "config": str,
         "base_prompt_id": int, "winner_prompt_id": int, "splits": str, "budget": str,
         "status": str, "history": str, "spent": str, "created_at": str,
         "finished_at": str},
        pk="id",
        foreign_keys=[("project_id", "projects", "id"), ("base_prompt_id", "prompts", "id")],
        not_null={"project_id", "name", "strategy", "status"},
    )
    db["optimizations"].create_index(["project_id", "name"], unique=True)


@migrations()
def m002_optimization_report(db: Database) -> None:
    """The final report of an optimization: base vs winner on val, train and test, the diff."""
    db["optimizations"].add_column("report", str)


@migrations()
def m003_run_owner(db: Database) -> None:
    """Who is running a run or an optimization (host, pid, heartbeat), and what a resume must keep."""
    for table in ("runs", "optimizations"):
        db[table].add_column("owner_host", str)
        db[table].add_column("owner_pid", int)
        db[table].add_column("heartbeat_at", str)
    db["runs"].add_column("use_cache", int)
    db["runs"].add_column("active_s", float)   # seconds spent running, summed over every session


@migrations()
def m004_signature_versions(db: Database) -> None:
    """Signatures are versioned like prompts: a change adds a row, existing rows are version 1."""
    db["signatures"].add_column("version", int, not_null_default=1)
    for index in db["signatures"].indexes:
        if index.unique and index.columns == ["project_id", "name"]:
            db.execute(f"drop index [{index.name}]")
    db["signatures"].create_index(["project_id", "name", "version"], unique=True)


@migrations()
def m005_prompt_candidates(db: Database) -> None:
    """Optimizer candidates are prompt versions kept out of the way: never the family's latest."""
    db["prompts"].add_column("candidate", int, not_null_default=0)


@migrations()
def m006_case_archived(db: Database) -> None:
    """A case a run used is archived rather than deleted: kept for that run, out of every new selection."""
    db["cases"].add_column("archived", int, not_null_default=0)


@migrations()
def m007_provider_batches(db: Database) -> None:
    """Batch mode: how a run is evaluated, and every provider batch it submitted (so a batch
    outlives the process that submitted it). `items` maps each request's custom_id to the
    (case_id, repeat) it answers; `done` is set once the batch's results are stored."""
    db["runs"].add_column("mode", str)
    db["batches"].create(
        {"id": int, "run_id": int, "provider": str, "batch_id": str, "input_file_id": str,
         "output_file_id": str, "error_file_id": str, "status": str, "items": str, "n_items": int,
         "done": int, "error": str, "created_at": str, "updated_at": str},
        pk="id", not_null={"run_id", "batch_id", "status", "items"}, defaults={"done": 0},
    )
    db["batches"].create_index(["run_id", "done"])
    db["batches"].create_index(["batch_id"], unique=True)


@migrations()
def m008_prompt_demo_selector(db: Database) -> None:
    """A prompt version may pick its demos per input (a kNN selector, JSON) instead of a fixed list."""
    db["prompts"].add_column("demo_selector", str)


@migrations()
def m009_prompt_archived(db: Database) -> None:
    """A prompt version in use (runs, optimizations, later versions) is archived rather than deleted:
    never the family's latest again, still resolvable as NAME@VERSION for what used it."""
    db["prompts"].add_column("archived", int, not_null_default=0)


@migrations()
def m010_cases_by_project_id(db: Database) -> None:
    """A project's cases in id order straight from an index: `eval --limit 10` reads ten rows, not
    every case of the project sorted first."""
    db["cases"].create_index(["project_id", "id"])


@migrations()
def m011_guards(db: Database) -> None:
    """`promptlab guard`: one row per guarded prompt family (paused?, triggered runs without a
    significant lift in a row, when it last optimized) and every decision it took."""
    db["guards"].create(
        {"id": int, "project_id": int, "prompt": str, "paused": int, "paused_reason": str,
         "no_gain": int, "last_optimized_at": str, "created_at": str},
        pk="id", foreign_keys=[("project_id", "projects", "id")],
        not_null={"project_id", "prompt", "paused", "no_gain"}, defaults={"paused": 0, "no_gain": 0})
    db["guards"].create_index(["project_id", "prompt"], unique=True)
    db["guard_decisions"].create(
        {"id": int, "guard_id": int, "at": str, "ref": str, "decision": str, "exit_code": int,
         "score": float, "threshold": float, "run": str, "optimization": str, "lift": float,
         "p_value": float, "significant": int, "message": str},
        pk="id", foreign_keys=[("guard_id", "guards", "id")], not_null={"guard_id", "at", "decision"})
    db["guard_decisions"].create_index(["guard_id", "id"])


@migrations()
def m012_prompt_tools(db: Database) -> None:
    """A prompt version may offer the model tools (OpenAI function specs, JSON) and a tool_choice."""
    db["prompts"].add_column("tools", str)
    db["prompts"].add_column("tool_choice", str)


@migrations()
def m013_workspace(db: Database) -> None:
    """Choices that hold for the whole database, by key: `project` is the current project
    (`promptlab project use`), which commands use when --project is not given."""
    db["workspace"].create({"key": str, "value": str}, pk="key", not_null={"value"})


@migrations()
def m014_result_expected(db: Database) -> None:
    """Each result keeps the expected output it was scored against (JSON): editing a case later
    does not rewrite the history of the runs that used it. NULL on results stored before."""
    db["results"].add_column("expected", str)


@migrations()
def m015_lenient_parses_and_role_usage(db: Database) -> None:
    """Which output fields of a result only a field's lenient rule accepted (a JSON list), and a
    run's tokens, cost and requests by role (judge, embedding) summed over its sessions (JSON)."""
    db["results"].add_column("lenient", str)
    db["runs"].add_column("role_usage", str)


@migrations()
def m016_prompt_structured(db: Database) -> None:
    """A prompt version may decode its replies to its signature's schema (`structured`), and may
    allow a model that cannot to be called unconstrained (`structured_fallback`)."""
    db["prompts"].add_column("structured", int, not_null_default=0)
    db["prompts"].add_column("structured_fallback", int, not_null_default=0)
