"""`python -m topo` and the `topo` command."""

import gc


def run() -> None:
    # Before the imports, not only in main(): building typer's, pydantic's and topo's classes makes
    # thousands of objects, and the collector's passes over them cost about 10 ms of each start.
    gc.disable()
    from topo.cli import main

    main()


if __name__ == "__main__":
    run()
