"""``python -m helpers.course``: generate, check and grade the graded labs (see ``cli``)."""
import sys

from helpers.course.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
