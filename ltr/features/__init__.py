"""The feature store side of the platform: Feast definitions, ingestion, training data.

Light at import: Feast is imported only inside the functions of ``store`` and
``training_data`` that need it.
"""
