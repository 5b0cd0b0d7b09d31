"""Background workers: long work off the GUI thread, results by queued signals."""
