"""A prompt version + inputs -> messages (sandboxed jinja2), with conversation turns, images and
tools, and the response_format a structured version decodes to; a reply -> parsed fields (tool
calls too); prompt diffs."""
