"""The one padding convention for variable-length slates, shared by the whole library.

A batch of queries is stored as ``[batch, list_len]`` tensors. Queries shorter than
``list_len`` are padded at any slot (usually the end):

* ``labels`` hold ``PADDED_Y_VALUE`` in padded slots (real labels are graded relevance >= 0);
* ``mask`` is a ``torch.bool`` tensor of the same shape, ``True`` for real documents;
* padded ``scores`` may hold any finite value; nothing computed from a slate depends on them.

The mask is authoritative: code never infers padding from a score value.
"""

from __future__ import annotations

PADDED_Y_VALUE: float = -1.0
"""Label stored in padded slots. Real labels are >= 0, so ``labels != PADDED_Y_VALUE`` (or
``labels >= 0``) recovers the mask from labels alone."""
