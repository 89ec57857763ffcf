"""Data I/O: LETOR/SVMlight files, the in-memory ranking dataset, synthetic data, folds."""

from ltr.data.dataset import LetorDataset, MissingValueReport

__all__ = ["LetorDataset", "MissingValueReport"]
