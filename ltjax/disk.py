"""A write that the disk or the file system refused: finding it behind a library's error, and what to do about it.

Orbax and tensorstore report a full disk as a `ValueError` whose text carries the OS error code; Python raises an
`OSError`. Either way the fault is the user's to fix (room, permissions), and the message says how.
"""
from __future__ import annotations

import errno
import os
import re

REMEDIES = {
    errno.ENOSPC: "the disk is full: free space there or choose another folder",
    errno.EDQUOT: "the disk quota is used up: free space there or choose another folder",
    errno.EFBIG: "the file grew past the size this process may write (ulimit -f): raise that limit",
    errno.EROFS: "the file system is read-only: choose a folder you can write",
    errno.EACCES: "permission denied: choose a folder you can write, or change its permissions",
    errno.EPERM: "permission denied: choose a folder you can write, or change its permissions",
}
# tensorstore's "[os_error_code='28']", Python's "[Errno 28]".
_CODE_IN_TEXT = re.compile(r"os_error_code='(\d+)'|\[Errno (\d+)\]")


def refusal(error: BaseException | None) -> int | None:
    """The errno of REMEDIES behind `error` (in it, its text, or an exception it was raised from), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in REMEDIES:
            return error.errno
        for match in _CODE_IN_TEXT.finditer(str(error)):
            code = int(match.group(1) or match.group(2))
            if code in REMEDIES:
                return code
        error = error.__cause__ or error.__context__
    return None


def describe(error: OSError) -> str:
    """One line: what could not be written and what to do. An `OSError` that ltjax raised keeps its own words."""
    if error.strerror and error.strerror != os.strerror(error.errno):
        return error.strerror
    where = f" {error.filename}" if error.filename else ""
    return f"cannot write{where}: {REMEDIES[error.errno]}"
