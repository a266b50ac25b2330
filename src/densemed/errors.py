"""The one exception type the CLI turns into a single line on stderr and exit code 2."""


class DensemedError(Exception):
    """A user-facing problem with input (a file, a config key, a checkpoint).

    The message must name the file or key and say what is wrong, in one line; the CLI prints
    it as ``densemed: error: <message>`` and exits with code 2, without a traceback.
    """
