"""The only code that talks to models: the LiteLLM gateway, the direct HTTP path, the embedded model,
the Batch API client, ask-for-JSON; how a call fails (errors.py) and what it cost (pricing.py)."""
