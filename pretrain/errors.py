"""Errors a user can cause; the CLI prints them as one line instead of a traceback."""


class SlimBenchError(ValueError):
    """Base of every user-facing error: bad input, config, checkpoint or data."""


class ConfigError(SlimBenchError):
    """A config file (suite or recipe) with an unknown key, a wrong type or a bad value."""


class DataError(SlimBenchError):
    """A dataset folder or file that is missing or not in the expected layout."""
