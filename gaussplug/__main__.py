"""``python -m gaussplug``: the ``gaussplug`` command line."""

import sys

from gaussplug.cli import main

if __name__ == "__main__":
    sys.exit(main())
