"""Plan runs, answer them (two executors of one interface: per call, or the provider's Batch API,
driven by evaluate.py), score replies (the runner), record how each run ended; gates, experiment files."""
