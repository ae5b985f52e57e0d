"""Errors a user can cause and fix, importable without torch (the CLI and params jobs start fast)."""


class DataError(ValueError):
    """Bad input data; the message names the file and the problem."""
