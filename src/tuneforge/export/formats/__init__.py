"""Export formats as plug-ins: `export_format: NAME` picks the member registered under NAME."""
