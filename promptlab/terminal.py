"""Text from cases, prompts and models made safe to print on a terminal.

Such text can carry escape sequences that clear the screen, retitle the
window or rewrite what was printed before (\\r): whole ESC sequences and every
other C0/C1 control character go; newlines and tabs stay.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"   # OSC (window title, hyperlinks), to BEL or ST
    r"|\x1b\[[0-?]*[ -/]*[@-~]"             # CSI (cursor, colours, clear screen)
    r"|\x1b[ -/]*[0-~]?"                    # the other ESC sequences (and a lone ESC)
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")      # C0 but \t and \n, DEL, C1


def printable(value: object) -> str:
    """`value` as text without terminal control sequences (None → '')."""
    return _CONTROL.sub("", "" if value is None else str(value))
