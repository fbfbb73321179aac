"""tool_call_match: did the model call the expected tool with the expected arguments?

The rule (`promptlab.prompting.tools.match`): 0 when it called another tool or none at all
(a scored failure, not an error: the reply is kept and the item counts against the prompt);
for the right tool, the share of argument names — those either call has — whose values are
the same JSON value of the same type (1 and 1.0 match; "1" and 1 do not, nor true and 1);
1 when neither call has arguments. Passed only at 1.0.

The compared field is `field`, else the signature's first output (of type tool_call), else
the case's only expected key; without a signature the reply's text is read as a call.
"""

from __future__ import annotations

from typing import Any

from promptlab.prompting.outputs import ParseError, extract_json
from promptlab.prompting.tools import NoCall, match, to_call
from promptlab.scorers.base import Score, ScoreInput
from promptlab.scorers.registry import BaseMetric, Early, expected_value, need_field, predicted_value


def _expected(item: ScoreInput, name: str) -> dict[str, Any]:
    value = expected_value(item, name)
    try:
        return to_call(extract_json(value) if isinstance(value, str) else value)
    except (NoCall, ParseError) as exc:
        raise Early(Score(None, False, {"error": f"the expected '{name}' is not a tool call ({exc})"}))


def _predicted(item: ScoreInput, name: str) -> dict[str, Any]:
    value = predicted_value(item, name) if item.outputs else item.output
    try:
        return to_call(extract_json(value) if isinstance(value, str) else value)
    except (NoCall, ParseError) as exc:
        raise Early(Score(0.0, False, {"reason": f"no tool call: {exc}"}))


def tool_call_match(field: str | None = None) -> BaseMetric:
    """Score the call's name and arguments against the expected call (see the module doc)."""

    def score(item: ScoreInput) -> Score:
        name = need_field(item, field)
        expected = _expected(item, name)
        predicted = _predicted(item, name)
        value, detail = match(predicted, expected)
        return Score(value, value == 1.0, {"called": predicted["name"], **detail})

    return BaseMetric("tool_call_match", score)
