"""Plain metavars in --help: NAME, TEXT, INTEGER, PATH rather than typer's `<str>`, `<list[str]>`.

Typer (0.29) prints a parameter's Python type, and an argument's type even when it has a
metavar; this sets click-style metavars on the command tree the CLI runs, once, in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

_NAMES = {str: "TEXT", int: "INTEGER", float: "NUMBER", bool: "BOOLEAN", Path: "PATH"}


def plain_metavars(command: Any) -> None:
    """Set a plain metavar on every parameter of `command` and its subcommands."""
    for param in command.params:
        if param.param_type_name == "argument":
            param.metavar = param.metavar or param.name.upper()
            param.display_type_rich = _no_type  # the name says it; typer would add `<str>`
        elif param.metavar is None and not param.is_flag and not param.count:
            param.metavar = _metavar(param.type_descriptor)
    for sub in getattr(command, "commands", {}).values():
        plain_metavars(sub)


def _no_type(ctx: Any = None) -> None:
    return None


def _metavar(descriptor: Any) -> str:
    if descriptor.is_choice and descriptor.choices:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in descriptor.choices) + "]"
    annotation = descriptor.annotation
    if get_origin(annotation) is list:  # a repeatable option takes one value each time
        annotation = get_args(annotation)[0]
    return _NAMES.get(annotation, "VALUE")
