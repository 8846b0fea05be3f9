"""stylebot tests; a package so `python -m tests.fakecord.demo` runs from the repo root."""
