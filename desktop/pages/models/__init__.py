"""The parts of the Models page: one module per tab, the table models and the verdict widgets."""
