"""Chaos suite: `migrate run` killed and resumed, and run under every injected fault."""
