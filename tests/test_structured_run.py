"""Per-field F1 for structured (JSON) outputs: aggregated per field in the run summary and shown."""

import json

import pytest

EXPERIMENT = """\
project: extract
signature:
  name: contact
  inputs: [text]
  outputs: [name, city]
prompts:
  - name: p
    template: "Extract from: {{ text }}"
models: [fake]
cases:
  - {text: Ann from Oslo, name: Ann, city: Oslo}
  - {text: Bob from Rome, name: Bob, city: Rome}
  - {text: Cy from Lima, name: Cy, city: Lima}
metrics: [field_f1]
"""


def test_field_f1_is_summarised_per_field_and_shown_by_runs_show(workspace):
    workspace.fake.configure(rules=[["Ann", '{"name": "Ann", "city": "Oslo"}'],
                                    ["Bob", '{"name": "Bob", "city": "Paris"}'],   # city wrong
                                    ["Cy", '{"name": "Cy", "city": "Lima"}']])
    result = workspace.cli("run", workspace.write("exp.yaml", EXPERIMENT), "--json")
    assert result.code == 0, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    assert run["scores"]["field_f1"] == pytest.approx((1 + 0.5 + 1) / 3)
    summary = json.loads(workspace.rows("select summary from runs")[0][0])["metrics"]["field_f1"]
    assert summary["per_field"]["name"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}
    assert summary["per_field"]["city"]["f1"] == pytest.approx(2 / 3)
    assert summary["micro_f1"] == pytest.approx(5 / 6)

    shown = workspace.cli("runs", "show", run["name"])
    assert shown.code == 0, shown.stderr
    assert "field_f1: per field" in shown.stdout
    assert "city" in shown.stdout and "0.667" in shown.stdout
