"""UserError: bad input from the person at the keyboard (a flag, a file, a dataset, a search range).

The CLI prints it as one line `error: ...` and exits 2; any other exception is a bug and keeps its
traceback. Lives in trainable/ (the package everything else imports) so no module needs the CLI for it.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem the user can fix from the message alone. A ValueError, so `except ValueError` still catches it."""
