"""``python -m engine.corpus``: lift a corpus of clips as one job (the command line is engine.front.corpus.cli)."""
import sys

from engine.front.corpus.cli import main

if __name__ == "__main__":
    sys.exit(main())
