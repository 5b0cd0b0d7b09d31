"""The parts of the Models page: one module per tab, the table models, the verdict widgets and the first-run dialog."""
