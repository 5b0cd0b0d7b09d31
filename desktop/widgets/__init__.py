"""Reusable widgets of the desktop shell."""
