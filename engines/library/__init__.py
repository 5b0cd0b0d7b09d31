"""The model library: hardware probe, fit estimates, installed models."""
