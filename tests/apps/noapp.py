"""A module with nothing the loader could serve."""

something_else = 1


def helper():
    return None
