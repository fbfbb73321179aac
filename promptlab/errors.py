"""Typed errors, each carrying the CLI exit code it maps to.

Messages are one line: what is wrong (naming the file or field) and the fix.
"""

from __future__ import annotations


class PromptlabError(Exception):
    exit_code = 2


class UsageError(PromptlabError):
    """Bad usage or input: exit 2."""


class NotFoundError(UsageError):
    """A named project, prompt, run or case does not exist."""


class UnknownModelError(UsageError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class GateFailed(PromptlabError):
    """A quality gate was not met: exit 1."""

    exit_code = 1


class ProviderError(PromptlabError):
    """The provider refused or failed (auth, outage): exit 3."""

    exit_code = 3


class AuthError(ProviderError):
    """401/403: stops the whole run."""


class StorageError(PromptlabError):
    """The database could not be written (disk full, I/O error, read-only): exit 2."""


def require_extra(extra: str, packages: tuple[str, ...], who: str) -> None:
    """Bad setup (exit 2) naming the extra to install when one of its packages is missing; looked
    up, not imported (llama.cpp loads slowly, and a half-installed package should not crash)."""
    import importlib.util

    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"{who} needs the {extra} extra ({missing[0]} is not installed): pip install -e "
                         f"'.[{extra}]' in the promptlab clone, or pip install 'promptlab[{extra}]'")
