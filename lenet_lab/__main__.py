"""`python -m lenet_lab` and the `lenet-lab` command (`run`)."""

import sys


def run() -> int:
    """The console script. A Ctrl-C while the command's modules load (a second or two on a
    busy machine) ends as one a moment later does: "Aborted.", exit 130, no traceback."""
    try:
        from lenet_lab.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("Aborted.\n")
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
