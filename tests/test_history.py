"""`promptlab prompt history NAME`: each version's scores over time, per model and split."""

import json

from tests.seeing import evaluate, rules, setup_project


def test_history_gives_first_latest_and_best_per_model_and_split(workspace):
    with open(workspace.root / "promptlab.toml", "a") as toml:  # a second alias on the same server
        toml.write(f'\n[models.other]\nmodel = "openai/other"\napi_base = "{workspace.fake.base_url}"\n')
    setup_project(workspace, n=10)
    workspace.fake.configure(rules=rules(broken=[1, 2, 3], prefix="Review: "))
    evaluate(workspace, "p@1", "a1")                             # 0.7
    workspace.fake.configure(rules=rules(broken=[1], prefix="Review: "))
    evaluate(workspace, "p@1", "a2", "--no-cache")               # 0.9
    workspace.fake.configure(rules=rules(broken=[1, 2], prefix="Review: "))
    evaluate(workspace, "p@1", "a3", "--no-cache")               # 0.8
    evaluate(workspace, "p@1", "b1", "--model", "other")         # 0.8, another model
    result = workspace.cli("prompt", "history", "p", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [v["ref"] for v in data["versions"]] == ["p@1", "p@2"]
    v1, v2 = data["versions"]
    assert v2["groups"] == []
    by_model = {g["model"]: g for g in v1["groups"]}
    fake = by_model["fake"]
    assert (fake["split"], fake["runs"]) == ("none", 3)
    assert (fake["first"]["run"], fake["latest"]["run"], fake["best"]["run"]) == ("a1", "a3", "a2")
    assert (fake["first"]["score"], fake["best"]["score"]) == (0.7, 0.9)
    assert [p["run"] for p in fake["points"]] == ["a1", "a2", "a3"]
    assert by_model["other"]["runs"] == 1 and by_model["other"]["best"]["score"] == 0.8

    table = workspace.cli("prompt", "history", "p")
    assert table.code == 0 and "0.900 (a2)" in table.stdout and "p@2" in table.stdout


def test_history_groups_by_split_and_names_an_unknown_prompt(workspace):
    setup_project(workspace, n=6, second=False)
    workspace.fake.configure(rules=rules(prefix="Review: "))
    ids = workspace.rows("select id from cases order by id")
    for (case_id,), split in zip(ids, ["train", "train", "test", "test", "test", "val"]):
        assert workspace.cli("case", "edit", str(case_id), "--split", split).code == 0
    evaluate(workspace, "p@1", "t1", "--split", "test")
    evaluate(workspace, "p@1", "all1")
    data = json.loads(workspace.cli("prompt", "history", "p", "--json").stdout)
    assert sorted(g["split"] for g in data["versions"][0]["groups"]) == ["mixed", "test"]
    missing = workspace.cli("prompt", "history", "nope")
    assert missing.code == 2 and "no prompt named 'nope'" in missing.stderr


def test_the_viewer_prompt_page_charts_the_history(workspace):
    from tests.test_view import get, origin, viewer

    setup_project(workspace, n=6)
    workspace.fake.configure(rules=rules(broken=[1], prefix="Review: "))
    evaluate(workspace, "p@1", "a1")
    evaluate(workspace, "p@2", "b1")
    with viewer(workspace) as url:
        status, _, page = get(origin(url) + "/projects/1/prompts/p")
    assert status == 200
    chart = page.split('<div id="history">')[1].split("</svg>")[0]
    assert chart.count("<circle") == 2 and "p@1 · a1 · fake · none: 0.833" in chart
    assert '<table id="history-table">' in page
