"""Importing this module fails with an error of its own."""

SETTING = "x"

raise RuntimeError("raised-at-import-marker")  # RAISE_LINE
