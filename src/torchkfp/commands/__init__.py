"""CLI command modules: each exposes register(app); heavy imports stay inside commands."""
