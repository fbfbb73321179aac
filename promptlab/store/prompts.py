"""Prompt versions: immutable, numbered per name, with labels and lineage."""

from __future__ import annotations

from typing import Any

from promptlab.config import check_params
from promptlab.errors import NotFoundError, UsageError
from promptlab.models import Demo, PromptContent, PromptVersion
from promptlab.store.database import RowNotFound, StoreBase, dumps, loads, parse_ref
from promptlab.store.lease import now


class Prompts(StoreBase):
    """The prompts table."""

    def add_prompt(self, project_id: int, name: str, content: PromptContent, *,
                   signature_id: int | None = None, parent_id: int | None = None,
                   made_by: str = "person", message: str = "", dedupe: bool = True,
                   candidate: bool = False) -> PromptVersion:
        """A new immutable version; identical content returns the existing version.

        A candidate (an optimizer's trial version) takes a version number but never
        becomes the family's latest until `promote_prompt`; it is matched only against
        the candidates of the same `made_by`, other versions only against non-candidates."""
        check_params(content.params, f"prompt '{name}'")
        with self.db.atomic():  # the number is allocated under the write lock: two writers never race
            return self._add_prompt(project_id, name, content, signature_id=signature_id,
                                    parent_id=parent_id, made_by=made_by, message=message,
                                    dedupe=dedupe, candidate=candidate)

    def _add_prompt(self, project_id: int, name: str, content: PromptContent, *, signature_id: int | None,
                    parent_id: int | None, made_by: str, message: str, dedupe: bool,
                    candidate: bool) -> PromptVersion:
        digest = content.hash()
        if dedupe:
            where = "project_id = ? and name = ? and content_hash = ? and candidate = ? and archived = 0"
            args: list[Any] = [project_id, name, digest, int(candidate)]
            if candidate:
                where, args = where + " and made_by = ?", args + [made_by]
            same = list(self.db["prompts"].rows_where(where, args, order_by="version desc", limit=1))
            if same and same[0]["signature_id"] == signature_id:
                return self._prompt(same[0])
        last = self.db.execute("select max(version) from prompts where project_id = ? and name = ?",
                               [project_id, name]).fetchone()[0] or 0
        if parent_id is None:  # the latest version people use (never a candidate)
            latest = self.db.execute(
                "select id from prompts where project_id = ? and name = ? and candidate = 0 and archived = 0 "
                "order by version desc limit 1", [project_id, name]).fetchone()
            parent_id = latest[0] if latest else None
        data = content.model_dump(mode="json")
        pk = self.db["prompts"].insert({
            "project_id": project_id, "name": name, "version": last + 1,
            "signature_id": signature_id, "system": content.system, "template": content.template,
            "demos": dumps(data["demos"]), "params": dumps(data["params"]),
            "demo_selector": dumps(data["demo_selector"]) if content.demo_selector else None,
            "tools": dumps(data["tools"]) if content.tools else None,
            "tool_choice": dumps(data["tool_choice"]) if content.tool_choice is not None else None,
            "structured": int(content.structured), "structured_fallback": int(content.structured_fallback),
            "content_hash": digest, "parent_id": parent_id, "made_by": made_by,
            "message": message, "candidate": int(candidate), "created_at": now()}).last_pk
        return self.prompt_by_id(pk)

    def remove_prompt(self, version: PromptVersion) -> str:
        """Delete a version nothing uses; archive one that runs, optimizations or later versions use,
        or the family's newest (its number is never given to other content). Returns what was done."""
        project_id = self.project_id(version.project)
        with self.db.atomic():
            labels = [r[0] for r in self.db.execute("select label from prompt_labels where prompt_id = ?",
                                                    [version.id])]
            if labels:
                raise UsageError(f"{version.ref} carries label {labels[0]}; remove it first with "
                                 f"`promptlab prompt label {version.name} {labels[0]} --remove`")
            used = (self.db["runs"].count_where("prompt_id = ?", [version.id])
                    or self.db["optimizations"].count_where("base_prompt_id = ? or winner_prompt_id = ?",
                                                            [version.id, version.id])
                    or self.db["prompts"].count_where("parent_id = ?", [version.id]))
            newest = self.db.execute("select max(version) from prompts where project_id = ? and name = ?",
                                     [project_id, version.name]).fetchone()[0] == version.version
            if used or newest:
                self.db["prompts"].update(version.id, {"archived": 1})
                return "archived"
            self.db["prompts"].delete(version.id)
        return "deleted"

    def promote_prompt(self, prompt_id: int) -> PromptVersion:
        """A candidate stops being one: it becomes a version like any other (the latest, being newest)."""
        self.db["prompts"].update(prompt_id, {"candidate": 0})
        return self.prompt_by_id(prompt_id)

    def prompt_by_id(self, prompt_id: int) -> PromptVersion:
        try:
            return self._prompt(self.db["prompts"].get(prompt_id))
        except RowNotFound:
            raise NotFoundError(f"no prompt version with id {prompt_id}") from None

    def prompt(self, project_id: int, ref: str) -> PromptVersion:
        """Resolve NAME (latest), NAME@VERSION or NAME@LABEL; the latest is never a candidate nor archived."""
        name, selector = parse_ref(ref)
        if selector is None or selector == "latest":
            where, args = "project_id = ? and name = ? and candidate = 0 and archived = 0", [project_id, name]
        elif selector.isdigit():
            where, args = "project_id = ? and name = ? and version = ?", [project_id, name, int(selector)]
        else:
            label = self.db.execute(
                "select prompt_id from prompt_labels where project_id = ? and name = ? and label = ?",
                [project_id, name, selector]).fetchone()
            if label is None:
                raise NotFoundError(f"prompt '{name}' has no label '{selector}'; set it with "
                                    f"`promptlab prompt label {name}@VERSION {selector}`")
            return self.prompt_by_id(label[0])
        rows = list(self.db["prompts"].rows_where(where, args, order_by="version desc", limit=1))
        if not rows:
            names = ", ".join(r[0] for r in self.db.execute(
                "select distinct name from prompts where project_id = ?", [project_id])) or "none yet"
            raise NotFoundError(f"no prompt '{ref}' (prompts: {names}); add it with "
                                f"`promptlab prompt add {name}`")
        return self._prompt(rows[0])

    def prompts(self, project_id: int, name: str | None = None, *,
                candidates: bool = False) -> list[PromptVersion]:
        """Prompt versions by name and version; optimizer candidates and archived versions only if asked."""
        where, args = "project_id = ?", [project_id]
        if not candidates:
            where += " and candidate = 0 and archived = 0"
        if name:
            where, args = where + " and name = ?", args + [name]
        return [self._prompt(r) for r in self.db["prompts"].rows_where(
            where, args, order_by="name, version")]

    def lineage(self, prompt: PromptVersion) -> list[PromptVersion]:
        """The version, its parent, its parent's parent… back to the root."""
        chain, seen = [prompt], {prompt.id}
        while chain[-1].parent_id and chain[-1].parent_id not in seen:
            parent = self.prompt_by_id(chain[-1].parent_id)
            chain.append(parent)
            seen.add(parent.id)
        return chain

    def set_label(self, prompt: PromptVersion, label: str) -> None:
        project_id = self.project(prompt.project)["id"]
        self.db["prompt_labels"].upsert(
            {"project_id": project_id, "name": prompt.name, "label": label,
             "prompt_id": prompt.id, "updated_at": now()}, pk=("project_id", "name", "label"))

    def remove_label(self, project_id: int, name: str, label: str) -> int:
        """Delete the label; returns the id of the version it pointed at."""
        with self.db.atomic():
            row = self.db.execute("select prompt_id from prompt_labels where project_id = ? and name = ? "
                                  "and label = ?", [project_id, name, label]).fetchone()
            if row is None:
                raise NotFoundError(f"prompt '{name}' has no label '{label}'; see `promptlab prompt list {name}`")
            self.db["prompt_labels"].delete((project_id, name, label))
        return row[0]

    def _prompt(self, row: dict) -> PromptVersion:
        project = self.db["projects"].get(row["project_id"])["name"]
        labels = tuple(r[0] for r in self.db.execute(
            "select label from prompt_labels where prompt_id = ? order by label", [row["id"]]))
        sig = self.db["signatures"].get(row["signature_id"]) if row["signature_id"] else None
        content = PromptContent(system=row["system"] or "", template=row["template"],
                                demos=tuple(Demo(**d) for d in loads(row["demos"], [])),
                                params=loads(row["params"], {}),
                                demo_selector=loads(row.get("demo_selector"), None),
                                tools=tuple(loads(row.get("tools"), [])),
                                tool_choice=loads(row.get("tool_choice"), None),
                                structured=bool(row.get("structured")),
                                structured_fallback=bool(row.get("structured_fallback")))
        return PromptVersion(id=row["id"], project=project, name=row["name"], version=row["version"],
                             content=content, content_hash=row["content_hash"],
                             signature=sig and sig["name"], signature_id=sig and sig["id"],
                             signature_version=sig and sig["version"],
                             parent_id=row["parent_id"], made_by=row["made_by"] or "person",
                             message=row["message"] or "", candidate=bool(row.get("candidate")),
                             archived=bool(row.get("archived")),
                             labels=labels,
                             created_at=row["created_at"] or "")
