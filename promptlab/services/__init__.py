"""Application logic between the CLI and the core: each service takes typed inputs, returns a typed
result and never prints (progress goes to the object passed in). The CLI parses, calls one, displays."""
