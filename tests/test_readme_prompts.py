"""The README's worked examples of a conversation, a tool call and an image run as written
(given a project, the fake model and, for the image, a picture next to the file)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.test_images import png

README = Path(__file__).resolve().parent.parent / "README.md"


def examples() -> list[dict]:
    text = README.read_text()
    section = text[text.index("### Conversations, tools and images"):text.index("### From application code")]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.S)]


def test_each_worked_example_runs(workspace):
    conversation, tools, image = examples()
    workspace.fake.configure(record_bodies=True, rules=[["pack", "umbrella"], ["animal", "cat"]],
                             tool_rules=[["Weather", "get_weather", {"city": "Paris"}]])
    (workspace.root / "img").mkdir()
    (workspace.root / "img" / "cat.png").write_bytes(png(2, 2, (5, 5, 5)))
    image.setdefault("prompts", [{"name": "p", "template": "{{ question }}"}])
    for i, example in enumerate((conversation, tools, image)):
        spec = {"project": f"readme{i}", "models": ["fake"], "metrics": ["exact_match"], **example}
        result = workspace.cli("run", workspace.write(f"example{i}.yaml", yaml.safe_dump(spec)), "--json")
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["runs"][0]["pass_rate"] == 1.0
    bodies = workspace.fake.stats()["bodies"]
    assert len(bodies[0]["messages"]) == 5 and bodies[1]["tools"] and bodies[2]["messages"][-1]["content"][1]["type"] == "image_url"
