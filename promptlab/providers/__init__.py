"""The only code that talks to models: the LiteLLM gateway, the direct HTTP path, the embedded model, ask-for-JSON."""
