"""The exception hierarchy of lsmtrie. Every error the package raises on purpose is an `Error`."""


class Error(Exception):
    """Base class of every lsmtrie error."""


class CorruptionError(Error):
    """A checksum or structure check failed: the file is damaged or is not what it claims."""


class VersionError(Error):
    """A file was written by a format version this build cannot read."""


class StorageError(Error, OSError):
    """The operating system reported an I/O error. `errno` holds its error number."""


class DiskFullError(StorageError):
    """The device is full (ENOSPC or EDQUOT). Nothing partial was left behind."""


class ItemTooLargeError(Error, ValueError):
    """A key or value is over its size limit; the message gives the limit."""


class InvalidArgumentError(Error, ValueError):
    """An argument was rejected by the C core (for example inconsistent batch offsets)."""


class ClosedError(Error):
    """The object was closed; it cannot be used any more."""


class LockError(Error):
    """Another process holds the store's writer lock."""


class ReadOnlyError(Error):
    """A write was attempted on a store opened with read_only=True."""
