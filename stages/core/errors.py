"""Errors that mean "the user asked for something that cannot be done".

The CLI prints them as one line and exits with status 2, before any output is touched.
"""


class UserError(Exception):
    """Bad input: params, data, a variant name, a run id. The message is one line."""
