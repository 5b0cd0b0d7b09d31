"""Headless subcommands of ``atelier``. None of them imports Qt."""
