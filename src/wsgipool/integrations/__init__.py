"""Integrations with frameworks' own tooling (``flask serve``); each imports its framework."""
