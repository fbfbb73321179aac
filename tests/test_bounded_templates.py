"""Templates cannot exhaust the machine: amplifying filters and operators are capped (refused at
`prompt add` when their arguments are constants), every render has an output-size, a loop and a
time cap, and a template that fails for one input is that item's error (kind `render`) — the
other items are answered and stored, in a real process whose peak memory is measured."""

import json

import pytest

from promptlab.errors import UsageError
from promptlab.models import PromptContent
from promptlab.prompting.render import RenderError, check_prompt, render_messages
from promptlab.prompting.template_sandbox import MAX_RENDER_CHARS
from tests.measured import run_measured
from tests.test_runs import setup_project

# each would build a gigabyte (or spin for hours) with jinja2's sandbox alone
STATIC_BOMBS = [
    "{{ text|center(10**9) }}",
    "{{ '%1000000000s'|format(text) }}",
    "{{ '%1000000000s' % text }}",
    "{{ '%.1000000000f' % 1.5 }}",
    "{{ '%*s' % (10**9, text) }}",
    "{{ text|indent(10**9) }}",
    "{{ [text]|batch(10**9, 'x')|list }}",
    "{{ text|slice(10**9, 'x')|list }}",
    "{{ 'abc'|replace('', 'x' * 90000) }}",
    "{{ " + " * ".join(["10**60"] * 25) + " }}",
    "{{ (10**60) ** 64 }}",
    "{{ text|tojson(10**9) }}",
    "{{ 'abcdefghijklmnop'|wordwrap(1, wrapstring='x' * 10000) }}",
]
# the same, with sizes that come from the input: only the render can stop them
RUNTIME_BOMBS = {
    "center": "{{ text|center(text|length * 10**8) }}",
    "format": "{{ ('%' ~ (text|length * 10**8) ~ 's')|format(text) }}",
    "replace": "{{ text|replace('', text * 9000) }}",
    "batch": "{{ [text]|batch(text|length * 10**8, 'x')|list }}",
    "products": "{{ " + " * ".join(["(text|length * 10**60)"] * 25) + " }}",
    "join": "{{ range(100000)|join(text * 5) }}",
    "wordwrap": "{{ text|wordwrap(1, wrapstring=text * 2000) }}",
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ text }}",
    "output": "{% for i in range(100000) %}{{ text * 1000 }}{% endfor %}",
    "filter block": "{% filter upper %}{% for i in range(99999) %}{{ text * 99 }}{% endfor %}{% endfilter %}",
    "a long spin": "{% for i in text * 7000 %}{% for j in text * 7000 %}{% endfor %}{% endfor %}{{ text }}",
}


@pytest.mark.parametrize("template", STATIC_BOMBS)
def test_prompt_add_refuses_amplifying_filters_and_operators(template):
    with pytest.raises(UsageError, match="prompt.template: .*at most"):
        check_prompt(PromptContent(template=template), None)


@pytest.mark.parametrize("name", sorted(RUNTIME_BOMBS))
def test_a_render_is_bounded_and_its_failure_is_a_render_error(name):
    check_prompt(PromptContent(template=RUNTIME_BOMBS[name]), None)  # passes the static checks
    with pytest.raises(RenderError, match="sandbox refused"):
        render_messages(PromptContent(template=RUNTIME_BOMBS[name]), None, {"text": "hello world"})


def test_honest_templates_still_render_at_full_size():
    content = PromptContent(template="{{ text|center(40) }}|{{ '%5.2f'|format(3.14159) }}|{{ items|join(', ') }}|"
                                     "{{ text|indent(2) }}|{{ 'a b'|replace(' ', '_') }}|{{ 3 ** 4 * 2 }}")
    out = render_messages(content, None, {"text": "hi", "items": ["a", "b"]})[-1]["content"]
    assert out == f"{'hi':^40}| 3.14|a, b|hi|a_b|162"
    big = "x" * (MAX_RENDER_CHARS // 2)  # a long input renders whole
    assert render_messages(PromptContent(template="{{ text }}"), None, {"text": big})[-1]["content"] == big


@pytest.mark.slow  # seconds: a real process per eval
def test_template_bombs_end_in_item_errors_with_the_other_items_stored(workspace):
    """Every bomb in one eval, each set off by one input, and a division by zero for another: the
    command ends with those items `render` errors, the others answered, peak memory under 500 MB."""
    setup_project(workspace, n=40)  # "great thing 1", "awful thing 2"…
    number = "text.split()[-1]|int"
    # every third input (under the failure threshold, which stops a run where most items fail)
    bombs = "".join(f"{{% if {number} == {3 * i + 1} %}}{t}{{% endif %}}" for i, t in enumerate(RUNTIME_BOMBS.values()))
    template = bombs + f"{{{{ 100 // ({number} - 35) }}}} Review: {{{{ text }}}}"
    assert workspace.cli("prompt", "add", "bomb", "--signature", "sentiment", "--template", template).code == 0
    ran = run_measured(workspace, "eval", "--prompt", "bomb", "--name", "b", "--json")
    assert "unexpected error" not in ran.stderr and "Traceback" not in ran.stderr
    assert json.loads(ran.stdout)["runs"][0]["n"] == 40, ran.stderr
    rows = workspace.rows("select c.inputs, r.error_kind, r.error, r.output from results r join cases c "
                          "on c.id = r.case_id where r.run_id = (select id from runs where name = 'b')")
    by_number = {int(json.loads(i)["text"].split()[-1]): (kind, error, out) for i, kind, error, out in rows}
    assert len(by_number) == 40
    failing = {*(3 * i + 1 for i in range(len(RUNTIME_BOMBS))), 35}
    assert {n for n, (kind, _, _) in by_number.items() if kind == "render"} == failing
    assert all(kind is None and out for n, (kind, _, out) in by_number.items() if n not in failing)
    assert "ZeroDivisionError" in by_number[35][1]
    assert all("sandbox refused" in by_number[n][1] for n in failing - {35})
    assert ran.peak_mb < 500, ran.peak_mb
