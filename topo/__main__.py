"""`python -m topo` and the `topo` command."""

import contextlib
import gc
import os
import sys


def run() -> None:
    # Before the imports, not only in main(): building typer's, pydantic's and topo's classes makes
    # thousands of objects, and the collector's passes over them cost about 10 ms of each start.
    gc.disable()
    from topo.cli import main

    try:
        main()
    except SystemExit as exc:
        code = _exit_code(exc.code)
    else:
        code = 0
    _leave(code)


def _exit_code(code: object) -> int:
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)  # as the interpreter does for sys.exit("message")
    return 1


def _leave(code: int) -> None:
    """Flush what was printed, then end the process without the interpreter's teardown.

    Every command has finished its work here: the apply lock is released, files are closed, and the
    threads still alive are daemons (the early definitions read, the lock's refresh) with nothing left to
    do. The teardown would free, one by one, the hundreds of thousands of objects a large plan builds:
    70 ms of the 1.5 s plan of 21,000 objects, spent on memory the operating system takes back at once.
    """
    for stream in (sys.stdout, sys.stderr):
        # `topo plan | head`: the reader left, which is no failure of the command; a closed stream
        # (ValueError) has nothing left to flush.
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
