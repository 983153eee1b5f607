"""Built-in gaussplug layer families."""
