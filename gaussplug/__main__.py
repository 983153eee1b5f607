"""``python -m gaussplug``: the ``gaussplug`` command line."""

from gaussplug.cli import entry

if __name__ == "__main__":
    entry()
