"""The commands that messages suggest, written so they run as printed (pasted into a shell)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promptlab.store import Store


def command(store: Store, project_id: int | None, *words: str) -> str:
    """`promptlab WORDS…`, quoted for the shell, with --project when the database holds more than one
    project: without it the command would ask which (or pick whatever project is current then)."""
    line = ["promptlab", *words]
    if project_id is not None and store.db["projects"].count > 1:
        line += ["--project", store.db["projects"].get(project_id)["name"]]
    return shlex.join(line)
