"""Fixes for upstream bugs, one file per patched thing, each with a version guard and a test that
notices when upstream has fixed it (STYLE.md: no monkey patching anywhere else)."""
