"""YAML anchors and aliases, as people write them to keep experiment files short (and as PyYAML
writes shared objects), load; what they expand to is bounded, so an alias bomb is refused at
once with one line, as is an alias that refers to itself."""

import json

import pytest
import yaml

from promptlab.cases.files import MAX_ALIAS_NODES, load_yaml
from promptlab.errors import UsageError
from tests.test_untrusted_inputs import billion_laughs, run_limited

ANCHORED = """\
project: demo
signature:
  name: sentiment
  inputs: [text]
  outputs:
    - {name: label, type: enum, choices: [positive, negative]}
prompts:
  - name: one-word
    <<: &common
      system: Answer with one word.
      params: &sampling {temperature: 0, max_tokens: 5}
    template: "Review: {{ text }}"
  - name: verdict
    <<: *common
    template: "Verdict on: {{ text }}"
    params: *sampling
models: [fake]
cases:
  - &great {text: a great phone, label: positive}
  - {text: awful battery, label: negative}
  - *great
metrics: [exact_match]
"""


def test_an_experiment_file_using_anchors_runs(workspace):
    ran = workspace.cli("run", workspace.write("exp.yaml", ANCHORED), "--json")
    assert ran.code == 0, ran.stderr
    prompts = [(name, system, json.loads(params)) for name, system, params in
               workspace.rows("select name, system, params from prompts order by name")]
    sampling = {"temperature": 0, "max_tokens": 5}
    assert prompts == [("one-word", "Answer with one word.", sampling), ("verdict", "Answer with one word.", sampling)]
    assert len(json.loads(ran.stdout)["runs"]) == 2


def test_what_pyyaml_writes_for_shared_objects_loads():
    shared = {"text": "a great phone", "label": "positive"}
    text = yaml.safe_dump({"cases": [shared, shared]})
    assert "&id001" in text and "*id001" in text
    assert load_yaml(text, "cases.yaml") == {"cases": [shared, shared]}


def test_aliases_may_expand_up_to_the_bound_and_not_past_it():
    fits = "base: &b [" + ", ".join(["x"] * 999) + "]\nuses: [" + ", ".join(["*b"] * 99) + "]\n"
    assert len(load_yaml(fits, "f.yaml")["uses"]) == 99  # ~99,000 values from aliases
    over = "base: &b [" + ", ".join(["x"] * 999) + "]\nuses: [" + ", ".join(["*b"] * (MAX_ALIAS_NODES // 999 + 2)) + "]\n"
    with pytest.raises(UsageError, match=r"f.yaml: line 2, column 7: YAML aliases here expand past 100,000"):
        load_yaml(over, "f.yaml")


def test_a_recursive_alias_is_refused():
    with pytest.raises(UsageError, match="refer to themselves"):
        load_yaml("a: &a [1, *a]\n", "r.yaml")


@pytest.mark.parametrize("levels", [9, 30])
def test_a_1_kb_alias_bomb_exits_2_with_one_line(workspace, levels):
    bomb = workspace.write("exp.yaml", f"project: demo\ndescription: {billion_laughs(levels)}\n")
    assert len(bomb.read_text()) < 3000
    result = run_limited(workspace, "run", "exp.yaml")  # at most 10 CPU seconds and 2 GB
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "exp.yaml: line 2" in lines[0] and "expand past" in lines[0]
