"""A prompt version + inputs -> messages (sandboxed jinja2), with conversation turns, images and
tools; a reply -> parsed fields (tool calls too); prompt diffs."""
