"""The one exception type a user is meant to read.

`SoundvjError` carries a single line that names the file or field at fault and what was expected.
The CLI prints it and exits with code 2; anything else is a bug and keeps its traceback.
"""


class SoundvjError(Exception):
    """A problem with the user's input (a file, a flag, a preset), worded for the user."""
