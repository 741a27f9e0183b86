"""The one exception type the command line turns into a one-line message and exit code 2."""


class UserError(Exception):
    """A problem with the user's input (file, field, model name) that the user can fix.

    The message is a single line that names the file or field and says what would fix it.
    """
