"""``python -m engine.visualize``: pictures of a lifted output (the command line is engine.front.visualize)."""
import sys

from engine.front.visualize import main

if __name__ == "__main__":
    sys.exit(main())
