"""The chat view: Qt-free HTML rendering of messages and the Qt message view."""
