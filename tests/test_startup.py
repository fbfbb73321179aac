"""Commands that only read the store start light: no litellm, no runner (scorers, numpy)."""

import subprocess
import sys

import pytest

PROBE = ("import sys\n"
         "from promptlab.cli import main\n"
         "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         "print(' '.join(sorted(m for m in ('litellm', 'promptlab.runner', 'numpy') if m in sys.modules)),"
         " file=sys.stderr)")


@pytest.mark.parametrize("command", [["runs", "list"], ["prompt", "list"], ["--help"]])
def test_listing_commands_import_neither_litellm_nor_the_runner(workspace, command):
    assert workspace.cli("project", "add", "demo").code == 0
    done = subprocess.run([sys.executable, "-c", PROBE, *command], cwd=workspace.root, capture_output=True,
                          text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1:] in ([], [""]), done.stderr
