"""Projects: a name, a description and per-project settings; deleting one takes its records with it."""

from __future__ import annotations

from typing import Any

from promptlab.errors import NotFoundError, UsageError
from promptlab.store.database import StoreBase, dumps, loads
from promptlab.store.lease import now


class Projects(StoreBase):
    """The projects table."""

    def ensure_project(self, name: str, description: str | None = None,
                       default_model: str | None = None) -> int:
        row = self._project_row(name)
        if row is None:
            return self.db["projects"].insert(
                {"name": name, "description": description or "", "default_model": default_model,
                 "settings": "{}", "created_at": now()}).last_pk
        updates = {k: v for k, v in (("description", description), ("default_model", default_model))
                   if v is not None and row[k] != v}
        if updates:
            self.db["projects"].update(row["id"], updates)
        return row["id"]

    def _project_row(self, name: str) -> dict | None:
        rows = list(self.db["projects"].rows_where("name = ?", [name], limit=1))
        return rows[0] if rows else None

    def project(self, name: str) -> dict:
        row = self._project_row(name)
        if row is None:
            known = ", ".join(r["name"] for r in self.db["projects"].rows) or "none yet"
            raise NotFoundError(f"no project '{name}' (projects: {known}); create it with "
                                f"`promptlab project add {name}`")
        return row

    def projects(self) -> list[dict]:
        return list(self.db["projects"].rows_where(order_by="name"))

    def project_id(self, name: str | None) -> int:
        """The named project, or the only one there is."""
        if name:
            return self.project(name)["id"]
        projects = self.projects()
        if len(projects) == 1:
            return projects[0]["id"]
        names = ", ".join(p["name"] for p in projects) or "none yet"
        raise UsageError(f"--project is required (projects: {names}); or choose one for every command "
                         f"with `promptlab project use NAME`")

    def current_project(self) -> str | None:
        """The project `promptlab project use` chose in this database, if it still exists."""
        row = self.db.execute("select value from workspace where key = 'project'").fetchone()
        return row[0] if row and self._project_row(row[0]) else None

    def use_project(self, name: str | None) -> None:
        """Make `name` the current project of this database (None: no current project)."""
        with self.db.atomic():
            if name is None:
                self.db.execute("delete from workspace where key = 'project'")
            else:
                self.project(name)  # an unknown name is refused, naming the projects there are
                self.db["workspace"].upsert({"key": "project", "value": name}, pk="key")

    def delete_project(self, project_id: int) -> dict[str, int]:
        """Delete a project and everything it holds (cached replies, shared by all, stay); rows deleted by table."""
        runs = "select id from runs where project_id = ?"
        deleted = {}
        with self.db.atomic():
            for table in self.db.table_names():  # results, and any other record of a run
                if "run_id" in self.db[table].columns_dict:
                    deleted[table] = self.db.execute(f"delete from [{table}] where run_id in ({runs})",
                                                     [project_id]).rowcount
            for table in ("runs", "optimizations", "prompt_labels", "prompts", "cases", "signatures"):
                deleted[table] = self.db.execute(f"delete from [{table}] where project_id = ?",
                                                 [project_id]).rowcount
            self.db["projects"].delete(project_id)
        return {table: n for table, n in deleted.items() if n}

    def set_project_settings(self, project_id: int, settings: dict) -> None:
        self.db["projects"].update(project_id, {"settings": dumps(settings)})

    def project_settings(self, project_id: int) -> dict:
        """The project's settings (e.g. allow_code_execution), {} when none."""
        return loads(self.db["projects"].get(project_id)["settings"], {}) or {}

    def update_project_settings(self, project_id: int, **changes: Any) -> dict:
        settings = {**self.project_settings(project_id), **changes}
        self.set_project_settings(project_id, settings)
        return settings
