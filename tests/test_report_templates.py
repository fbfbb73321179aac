"""The HTML report's templates: shipped as package data, loaded autoescaped and strict."""

import fnmatch
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from promptlab.reports import to_html

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
SHARED = ("report.html", "report.css", "report.js", "charts.html", "parts.html", "run_parts.html",
          "optimization_parts.html")


def test_every_template_and_script_is_package_data():
    """A wheel carries only the files pyproject's package-data names: each one shipped is named there."""
    globs = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    assert {p.name for p in (files("promptlab.reports") / "templates").iterdir()} >= set(SHARED)
    for package, folder in (("promptlab.reports", "templates"), ("promptlab.view", "templates"),
                            ("promptlab.view", "static")):
        for path in (files(package) / folder).iterdir():
            assert any(fnmatch.fnmatch(f"{folder}/{path.name}", g) for g in globs[package]), (package, path.name)


def test_the_environment_escapes_blanks_none_and_refuses_undefined_names():
    env = to_html.environment()
    page = env.from_string("{{ text }}|{{ nothing }}").render(text='<img src=x onerror="go()">', nothing=None)
    assert page == "&lt;img src=x onerror=&#34;go()&#34;&gt;|"
    with pytest.raises(UndefinedError):  # a misspelt fact is an error, not an empty cell
        env.from_string("{{ facts.run.nmae }}").render(facts={"run": {"name": "r1"}})
