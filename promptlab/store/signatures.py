"""Signatures: versioned input/output contracts of a project's prompts."""

from __future__ import annotations


from promptlab.errors import NotFoundError
from promptlab.models import PromptVersion, Signature, SignatureVersion
from promptlab.store.database import RowNotFound, StoreBase, dumps, loads
from promptlab.store.lease import now


class Signatures(StoreBase):
    """The signatures table (one row per version)."""

    # Versioned like prompts: the instruction opens every prompt's system message,
    # so a change adds a version and a prompt version keeps the one it was made with.
    def upsert_signature(self, project_id: int, sig: Signature) -> int:
        """The latest version's id when its content is `sig`'s, else a new version's."""
        data = sig.model_dump(mode="json")
        content = {"instruction": sig.instruction, "inputs": dumps(data["inputs"]),
                   "outputs": dumps(data["outputs"])}
        latest = self._signature_row(project_id, sig.name)
        if latest is not None and all((latest[k] or "") == v for k, v in content.items()):
            return latest["id"]
        return self.db["signatures"].insert({
            **content, "project_id": project_id, "name": sig.name,
            "version": latest["version"] + 1 if latest else 1, "updated_at": now()}).last_pk

    def _signature_row(self, project_id: int, name: str, version: int | None = None) -> dict | None:
        where, args = "project_id = ? and name = ?", [project_id, name]
        if version is not None:
            where, args = where + " and version = ?", args + [version]
        rows = list(self.db["signatures"].rows_where(where, args, order_by="version desc", limit=1))
        return rows[0] if rows else None

    def signature_version(self, project_id: int, name: str, version: int | None = None) -> SignatureVersion:
        """NAME's latest version, or the given one."""
        row = self._signature_row(project_id, name, version)
        if row is None:
            latest = self._signature_row(project_id, name) if version is not None else None
            if latest is not None:
                raise NotFoundError(f"signature '{name}' has no version {version} (versions 1 to "
                                    f"{latest['version']}); see `promptlab signature list`")
            raise NotFoundError(f"no signature '{name}' in this project; add it with "
                                f"`promptlab signature add`")
        return _signature_version(row)

    def signature(self, project_id: int, name: str | None = None, *, id: int | None = None) -> Signature:
        """By name: the latest version; by id: that version."""
        if id is None:
            return self.signature_version(project_id, name).signature
        try:
            return _signature(self.db["signatures"].get(id))
        except RowNotFound:
            raise NotFoundError(f"no signature version with id {id}") from None

    def signature_id(self, project_id: int, name: str) -> int:
        """The latest version's id (what a new prompt version binds to)."""
        return self.signature_version(project_id, name).id

    def prompt_signature(self, prompt: PromptVersion) -> Signature | None:
        """The signature version this prompt version was made with (never a later one)."""
        return self.signature(0, id=prompt.signature_id) if prompt.signature_id else None

    def signature_versions(self, project_id: int) -> list[SignatureVersion]:
        """Every version of every signature, by name then version."""
        return [_signature_version(r) for r in self.db["signatures"].rows_where(
            "project_id = ?", [project_id], order_by="name, version")]

    def signatures(self, project_id: int) -> list[Signature]:
        """The latest version of each signature."""
        latest = {v.signature.name: v.signature for v in self.signature_versions(project_id)}
        return list(latest.values())


def _signature(row: dict) -> Signature:
    return Signature(name=row["name"], instruction=row["instruction"] or "",
                     inputs=loads(row["inputs"]), outputs=loads(row["outputs"]))


def _signature_version(row: dict) -> SignatureVersion:
    return SignatureVersion(id=row["id"], version=row["version"], signature=_signature(row),
                            created_at=row["updated_at"] or "")
