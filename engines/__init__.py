"""Atelier's engine layer: everything that is not a window.

This package never imports Qt. The desktop shell (``desktop/``) and the
command line both drive it; tests exercise it without a display.
"""
