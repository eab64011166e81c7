"""``python -m engine.run``: lift 2D keypoint files to 3D (the command line is engine.front.cli)."""
import sys

from engine.front.cli import main

if __name__ == "__main__":
    sys.exit(main())
