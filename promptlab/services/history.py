"""`promptlab prompt history NAME`: every version of a prompt with its runs' scores over time.

Per version, the completed runs are grouped by model and split (the splits of the cases a run was
scored on; "mixed" when they differ), and each group gives its first, latest and best score (each
the mean of the run's first metric, as `runs list` shows it) with the run that made it. Optimizer
runs and candidate versions are left out unless asked: they are the search's, not the prompt's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from promptlab.errors import NotFoundError

if TYPE_CHECKING:
    from promptlab.store import Store


def prompt_history(store: Store, project_id: int, name: str, *, candidates: bool = False,
                   optimizer_runs: bool = False) -> dict[str, Any]:
    versions = store.prompts(project_id, name, candidates=candidates)
    if not versions:
        raise NotFoundError(f"no prompt named '{name}' in this project; see `promptlab prompt list`")
    runs = store.prompt_history_runs(project_id, name, optimizer_runs=optimizer_runs)
    out = []
    for version in versions:
        groups: dict[tuple[str, str], list[dict]] = {}
        for run in runs.get(version.id, []):
            groups.setdefault((run["model"], run["split"]), []).append(run)
        out.append({"version": version.version, "ref": version.ref, "made_by": version.made_by,
                    "created_at": version.created_at, "labels": list(version.labels),
                    "candidate": version.candidate, "message": version.message,
                    "groups": [_group(model, split, rows) for (model, split), rows in sorted(groups.items())]})
    return {"prompt": name, "versions": out}


def _group(model: str, split: str, runs: list[dict]) -> dict[str, Any]:
    scored = [r for r in runs if r["score"] is not None]

    def point(run: dict | None) -> dict | None:
        return None if run is None else {"run": run["name"], "score": run["score"], "metric": run["metric"],
                                         "at": run["finished_at"] or run["created_at"]}

    return {"model": model, "split": split, "runs": len(runs),
            "first": point(scored[0] if scored else None), "latest": point(scored[-1] if scored else None),
            "best": point(max(scored, key=lambda r: r["score"]) if scored else None),
            "points": [point(r) for r in scored]}
