"""ltr: the research half of ltr-platform (data, models, training, metrics, export)."""

__version__ = "0.1.0"
