"""The command line's shape, shared by every command: `CONFIG.yaml key=value --key value --flag`."""

from __future__ import annotations

from collections.abc import Sequence


def split_args(
    argv: Sequence[str], flags: Sequence[str] = ()
) -> tuple[str | None, list[str], dict[str, str]]:
    """(config path, `key=value` overrides, command flags) from `CONFIG.yaml key=v --key v --key=v`."""
    config: str | None = None
    overrides: list[str] = []
    options: dict[str, str] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item.startswith("--"):
            key, eq, value = item[2:].partition("=")
            if not eq:
                has_value = i + 1 < len(items) and not items[i + 1].startswith("--")
                value = items[i + 1] if has_value else "true"
                i += 1 if has_value else 0
            if key in flags:
                options[key] = value
            else:
                overrides.append(f"{key}={value}")
        elif "=" in item:
            overrides.append(item)
        elif config is None and item.endswith((".yaml", ".yml", ".json")):
            config = item
        else:
            overrides.append(item)  # reported as "not of the form key=value"
        i += 1
    return config, overrides, options
