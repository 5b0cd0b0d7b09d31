"""The model library: the catalog, the installed models, the probe registry, downloads and advice.

What fits and how fast it runs is judged with :mod:`engines.machine`, which the engines use too."""
