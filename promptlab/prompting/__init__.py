"""A prompt version + inputs -> messages (sandboxed jinja2); a reply -> parsed fields; prompt diffs."""
