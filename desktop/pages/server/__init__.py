"""Parts of the Server page: the server's start and stop off the GUI thread, its tables, and how to connect."""
