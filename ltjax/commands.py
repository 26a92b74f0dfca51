"""How every ltjax command ends: its exit code, and an error the user can act on as one message.

Exit codes::

| exit | meaning |
|---|---|
| 0 | done |
| 1 | a bug (in ltjax or a library under it): Python's traceback, to report |
| 2 | the command cannot do what it was asked: one message says what, where and how to fix it (see below) |
| 69 | another process of a run across processes stopped (`ltjax.multihost`) |
| 75 | stopped by SIGTERM or SIGINT after a checkpoint: the same command resumes |

Exit 2 is for a config, a data folder or file, a checkpoint, a busy, read-only or full workdir, or a run that diverged.

`--debug` (on any command) or the environment variable `LTJAX_DEBUG=1` shows the traceback behind a message too.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence

from ltjax import disk, multihost
from ltjax.errors import UserError

EXIT_USER_ERROR = 2


def add_debug_flag(parser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback behind an error message (also: LTJAX_DEBUG=1)")


def run(program: str, main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """`main(argv)`'s exit code, with the errors above turned into one line on stderr (see the module docstring):
    a `UserError` (or a missing file) is its message, a write the disk refused says what to do."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("LTJAX_DEBUG", "") not in ("", "0")

    def handled() -> int:
        try:
            return main(argv)
        except multihost.Interrupted as stop:
            print(f"{program}: {multihost.label()}{stop}", file=sys.stderr)
            return multihost.EXIT_INTERRUPTED
        except Exception as error:
            if isinstance(error, (UserError, FileNotFoundError)):
                message = str(error)
            elif isinstance(error, OSError) and error.errno in disk.REMEDIES:
                message = disk.describe(error)
            else:
                raise
            if debug:
                traceback.print_exc()
            print(f"{program}: {multihost.label()}error: {message}", file=sys.stderr)
            return EXIT_USER_ERROR

    return multihost.run_command(handled)
