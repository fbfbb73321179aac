"""promptlab: a local-first prompt lab."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`promptlab.load_prompt` without importing the store for every `import promptlab`."""
    if name == "load_prompt":
        from promptlab.api import load_prompt

        return load_prompt
    raise AttributeError(f"module 'promptlab' has no attribute {name!r}")
