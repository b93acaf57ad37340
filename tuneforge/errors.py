"""Errors a user can cause. Each message says what is wrong, where (file, line or flag) and
what to do; a traceback is reserved for bugs in tuneforge itself."""


class TuneforgeError(Exception):
    """Base class: the CLI prints the message and exits with status 2, no traceback."""


class ConfigError(TuneforgeError):
    """A setting (flag, YAML key or keyword argument) is missing or out of range."""


class DataError(TuneforgeError):
    """Input data is missing, empty, unreadable or malformed."""


class BundleError(TuneforgeError):
    """A saved model bundle or run folder is missing, truncated, tampered with or too new."""


class StorageError(TuneforgeError):
    """A file could not be written: disk full, read-only file system or no permission (the
    message names the path); the previous version of the file, if any, is left as it was."""
