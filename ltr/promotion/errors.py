"""Exceptions of :mod:`ltr.promotion` (a leaf module, so its helpers can raise them)."""

from __future__ import annotations


class PromotionError(RuntimeError):
    """A promotion or rollback cannot proceed; the message says why."""


class ArtifactRejected(PromotionError):
    """The version folder is missing, incomplete or does not match its sha256."""


class PromotionInProgress(PromotionError):
    """Another promotion holds the model store, or routing shows one for another version."""


class PromotionPreempted(PromotionError):
    """Routing changed under a running promotion (a rollback won): it stops, writes nothing."""
