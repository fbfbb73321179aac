"""The lines a run's headline needs beside it, for every place that shows a run (the terminal,
Markdown and HTML reports, the viewer): its errors and what the scored items alone scored,
repeats, per-field accuracy, lenient parses, and cost by role. Plain text, no I/O.
"""

from __future__ import annotations

from typing import Any

from promptlab.providers.usage import ROLES


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def p_text(p: float | None) -> str:
    """A p-value to 4 places; one that rounds to 0 is "< 0.0001", never "0.0000" (the terminal,
    the report and the viewer all write it so)."""
    return "–" if p is None else "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def cost_text(value: Any) -> str:
    """A cost as shown everywhere: n/a when unpriced."""
    return "n/a" if value is None else f"${value:.4f}"


def run_notes(r: dict) -> list[str]:
    """What a run's headline needs beside it: its errors and what the scored items alone scored,
    repeats, per-field accuracy, lenient parses, cost by role (older runs lack some: skipped)."""
    lines = []
    if r.get("errors"):
        kinds = "; ".join(f"{e['kind']} ×{e['count']}: {e['message']}" for e in r.get("top_errors") or [])
        lines.append(f"{r['errors']} of {r['n']} items errored, each scored 0 in the headline"
                     + (f" ({kinds})" if kinds else ""))
        scored = r.get("scored") or {}
        for metric, mean in (scored.get("scores") or {}).items():
            if mean is not None:
                lines.append(f"scored only: {metric} {mean:.3f} over {scored['n']} scored of {r['n']}; "
                             f"{r['errors']} errors")
    repeats = r.get("repeats") or {}
    if (repeats.get("k") or 0) > 1:
        k, flaky = repeats["k"], repeats.get("flaky") or []
        lines.append(f"repeats ×{k}: pass@1 {_num(repeats['pass_at_1'])}, pass@{k} {_num(repeats['pass_at_k'])}, "
                     f"pass^{k} {_num(repeats['pass_hat_k'])}, agreement {_num(repeats.get('agreement'), 2)}; "
                     + (f"{len(flaky)} flaky cases: {', '.join(map(str, flaky[:20]))}"
                        + (" …" if len(flaky) > 20 else "") if flaky else "no flaky cases"))
    if fields := r.get("fields"):
        lines.append("per-field accuracy: " + ", ".join(
            f"{name} {_num(f['accuracy'])}" + (f" ({f['unparsed']} unparsed)" if f.get("unparsed") else "")
            for name, f in fields.items()))
    if (lenient := r.get("lenient") or {}).get("replies"):
        lines.append(f"{lenient['replies']} replies accepted only leniently ("
                     + ", ".join(f"{name} ×{n}" for name, n in lenient["fields"].items()) + ")")
    roles = r.get("by_role") or {}
    if len(roles) > 1:
        lines.append(by_role_text(roles))
    return lines


def by_role_text(roles: dict[str, dict]) -> str:
    """'by role: task 40 requests, 812 tokens, n/a · judge 40 requests, …' (usage.RoleUsage JSON)."""
    return "by role: " + " · ".join(
        f"{role} {u['requests']} requests, {u['prompt_tokens'] + u['completion_tokens']} tokens, "
        f"{cost_text(u['cost'])}" for role, u in sorted(roles.items(), key=lambda kv: _order(kv[0])))


def _order(role: str) -> int:
    return ROLES.index(role) if role in ROLES else len(ROLES)
