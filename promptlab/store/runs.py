"""Runs: one prompt version on one model over a set of cases, and their lookups."""

from __future__ import annotations

from typing import Any, Iterable

from promptlab.errors import NotFoundError, UsageError
from promptlab.models import PromptVersion
from promptlab.store import lease
from promptlab.store.database import StoreBase, dumps, loads
from promptlab.store.lease import now
from promptlab.store.records import Run


class Runs(StoreBase):
    """The runs table."""

    def create_run(self, project_id: int, name: str, prompt: PromptVersion, **fields: Any) -> int:
        if self.db["runs"].count_where("project_id = ? and name = ?", [project_id, name]):
            raise UsageError(f"a run named '{name}' already exists in this project; choose another "
                             f"--name or continue it with --resume {name}")
        row = {"project_id": project_id, "name": name, "prompt_id": prompt.id, "status": "running",
               "created_at": now(), "n_results": 0, "n_errors": 0, **lease.mine()}
        row.update({k: dumps(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()})
        return self.db["runs"].insert(row).last_pk

    def run(self, project_id: int, name: str) -> Run:
        rows = list(self.db["runs"].rows_where("project_id = ? and name = ?", [project_id, name], limit=1))
        if not rows:
            raise NotFoundError(f"no run '{name}' in this project; see `promptlab runs list`")
        return run_record(rows[0])

    def run_by_id(self, run_id: int) -> Run:
        return run_record(self.db["runs"].get(run_id))

    def run_rows(self, project_id: int, *, prompt_id: int | None = None, prompt_name: str | None = None,
                 model: str | None = None, status: str | None = None, optimizer_runs: bool = False,
                 limit: int | None = None) -> list[dict]:
        """Runs for a listing, newest first: only the shown columns (the main score is the first
        metric's mean, read inside SQLite; a running run's n counts its stored results)."""
        where, args = ["r.project_id = ?"], [project_id]
        if prompt_id is not None:
            where.append("r.prompt_id = ?")
            args.append(prompt_id)
        if prompt_name is not None:
            where.append("p.name = ?")
            args.append(prompt_name)
        if model is not None:
            where.append("(r.model = ? or r.model_name = ?)")
            args += [model, model]
        if status is not None:
            where.append("r.status = ?")
            args.append(status)
        if not optimizer_runs:
            where.append("r.optimization_id is null")
        sql = f"""
            select r.name, r.status, p.name as prompt, p.version, r.model,
                   case when r.status in ('running', 'submitted')
                        then (select count(*) from results where run_id = r.id) else r.n_results end as n,
                   r.n_errors as errors, json_extract(r.metrics, '$[0].name') as metric,
                   json_extract(r.summary, '$.metrics."' || json_extract(r.metrics, '$[0].name') || '".mean')
                       as score,
                   r.optimization_id is not null as optimizer, r.created_at,
                   r.owner_host, r.owner_pid, r.heartbeat_at
            from runs r join prompts p on p.id = r.prompt_id
            where {' and '.join(where)} order by r.id desc"""
        if limit is not None:
            sql, args = sql + " limit ?", args + [limit]
        return [dict(row) for row in self.db.query(sql, args)]

    def prompt_history_runs(self, project_id: int, name: str, *,
                            optimizer_runs: bool = False) -> dict[int, list[dict]]:
        """A prompt family's completed runs by version id, oldest first: model, the split of the
        cases scored ("mixed" when they differ, "none" when unsplit), the first metric's mean."""
        sql = f"""
            select r.prompt_id, r.name, r.model, r.created_at, r.finished_at,
                   json_extract(r.metrics, '$[0].name') as metric,
                   json_extract(r.summary, '$.metrics."' || json_extract(r.metrics, '$[0].name') || '".mean')
                       as score,
                   (select case when count(distinct coalesce(c.split, 'none')) > 1 then 'mixed'
                                else max(coalesce(c.split, 'none')) end
                    from json_each(r.case_ids) j join cases c on c.id = j.value) as split
            from runs r join prompts p on p.id = r.prompt_id
            where r.project_id = ? and p.name = ? and r.status = 'completed'
                  {'' if optimizer_runs else 'and r.optimization_id is null'}
            order by r.id"""
        out: dict[int, list[dict]] = {}
        for row in self.db.query(sql, [project_id, name]):
            out.setdefault(row["prompt_id"], []).append(dict(row))
        return out

    def delete_run(self, run_id: int) -> int:
        """Delete a run, its results and any other record of it (provider batches); nothing else:
        cases, prompts and cached replies stay. Returns how many results went."""
        with self.db.atomic():
            removed = {table: self.db.execute(f"delete from [{table}] where run_id = ?", [run_id]).rowcount
                       for table in self.db.table_names() if "run_id" in self.db[table].columns_dict}
            self.db["runs"].delete(run_id)
        return removed["results"]

    def update_run(self, run_id: int, **fields: Any) -> None:
        self.db["runs"].update(run_id, {k: dumps(v) if isinstance(v, (dict, list)) else v
                                        for k, v in fields.items()})

    def find_run(self, project_id: int, name: str) -> Run | None:
        """The run with this name, or None."""
        rows = list(self.db["runs"].rows_where("project_id = ? and name = ?", [project_id, name], limit=1))
        return run_record(rows[0]) if rows else None

    def latest_run(self, project_id: int, prompt_id: int, *, model: str | None = None,
                   status: str = "completed", exclude: Iterable[int] = ()) -> Run | None:
        """The newest run of a prompt version with this status (optionally on one model)."""
        where, args = "project_id = ? and prompt_id = ? and status = ?", [project_id, prompt_id, status]
        if model is not None:
            where, args = where + " and model = ?", args + [model]
        skip = list(exclude)
        if skip:
            where, args = where + f" and id not in ({','.join('?' * len(skip))})", args + skip
        rows = list(self.db["runs"].rows_where(where, args, order_by="id desc", limit=1))
        return run_record(rows[0]) if rows else None

    def prompt_runs(self, project_id: int, prompt_id: int, status: str = "completed") -> list[Run]:
        """A prompt version's runs with this status, newest first."""
        return [run_record(r) for r in self.db["runs"].rows_where(
            "project_id = ? and prompt_id = ? and status = ?", [project_id, prompt_id, status],
            order_by="id desc")]


def run_record(row: dict) -> Run:
    return Run(**{**row, "params": loads(row["params"], {}), "metrics": loads(row["metrics"], []),
                  "case_ids": loads(row["case_ids"], []), "summary": loads(row["summary"]),
                  "role_usage": loads(row.get("role_usage"))})
