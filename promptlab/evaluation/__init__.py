"""Plan a run, run it (the runner, the batch executor), judge it (gates), experiment files."""
