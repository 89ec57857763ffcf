"""Cross-validation folds built by rotating subsets ``S1..Sn`` (the LETOR 4.0 layout).

With five subsets (MQ2008's ``readme.txt``): Fold1 = train S1 S2 S3, vali S4, test S5;
Fold2 = train S2 S3 S4, vali S5, test S1; and so on. In general fold ``k`` trains on the
``n - 2`` subsets starting at ``S<k>`` (wrapping around), validates on the next one and
tests on the one after.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ltr.data.dataset import LetorDataset, MissingValueReport
from ltr.utils.io import atomic_open

__all__ = ["MQ2008_ROTATION", "fold_files", "load_fold", "rotation", "write_folds"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "vali", "test")

# fold -> split -> subset numbers, exactly as in MQ2008's readme.txt.
MQ2008_ROTATION: dict[int, dict[str, tuple[int, ...]]] = {
    1: {"train": (1, 2, 3), "vali": (4,), "test": (5,)},
    2: {"train": (2, 3, 4), "vali": (5,), "test": (1,)},
    3: {"train": (3, 4, 5), "vali": (1,), "test": (2,)},
    4: {"train": (4, 5, 1), "vali": (2,), "test": (3,)},
    5: {"train": (5, 1, 2), "vali": (3,), "test": (4,)},
}


def rotation(fold: int, n_subsets: int = 5) -> dict[str, tuple[int, ...]]:
    """Subset numbers (1-based) of each split of ``fold``."""
    if n_subsets < 3:
        raise ValueError(f"n_subsets must be >= 3 (train, vali, test), got {n_subsets}")
    if not 1 <= fold <= n_subsets:
        raise ValueError(f"fold must be in 1..{n_subsets}, got {fold}")
    ring = [(fold - 1 + i) % n_subsets + 1 for i in range(n_subsets)]
    return {"train": tuple(ring[:-2]), "vali": (ring[-2],), "test": (ring[-1],)}


def fold_files(root: str | Path, fold: int, n_subsets: int = 5) -> dict[str, list[Path]]:
    """``{"train": [...], "vali": [...], "test": [...]}``: paths of ``S<i>.txt`` under ``root``.

    Raises FileNotFoundError naming every subset file that is missing.
    """
    root = Path(root)
    spec = rotation(fold, n_subsets)
    missing = [root / f"S{i}.txt" for i in range(1, n_subsets + 1)]
    missing = [p for p in missing if not p.is_file()]
    if missing:
        names = ", ".join(p.name for p in missing)
        raise FileNotFoundError(
            f"{root}: missing subset file(s) {names} (expected S1..S{n_subsets}.txt)"
        )
    return {split: [root / f"S{i}.txt" for i in spec[split]] for split in SPLITS}


def load_fold(
    root: str | Path, fold: int, n_subsets: int = 5, **read_kwargs: Any
) -> tuple[LetorDataset, LetorDataset, LetorDataset]:
    """(train, vali, test) of ``fold``; train is the concatenation of its subsets.

    ``read_kwargs`` go to :func:`ltr.data.letor.read_letor` (``missing=``, ...). Each subset
    file is parsed once per call.
    """
    from ltr.data.letor import read_letor

    files = fold_files(root, fold, n_subsets)
    cache: dict[Path, LetorDataset] = {}

    def load(path: Path) -> LetorDataset:
        if path not in cache:
            cache[path] = read_letor(path, **read_kwargs)
        return cache[path]

    out: list[LetorDataset] = []
    for split in SPLITS:
        parts = [load(p) for p in files[split]]
        if len(parts) == 1:
            out.append(parts[0])
            continue
        joined = LetorDataset.concat(parts)
        joined.missing_report = merge_reports([p.missing_report for p in parts])
        out.append(joined)
    return out[0], out[1], out[2]


def merge_reports(reports: list[MissingValueReport]) -> MissingValueReport:
    """Sum the counts of several missing-value reports (same policy)."""
    first = reports[0]
    return MissingValueReport(
        policy=first.policy,
        impute_value=first.impute_value,
        null_values=sum(r.null_values for r in reports),
        nan_values=sum(r.nan_values for r in reports),
        inf_values=sum(r.inf_values for r in reports),
        rows_affected=sum(r.rows_affected for r in reports),
    )


def write_folds(
    root: str | Path,
    out_dir: str | Path,
    *,
    n_subsets: int = 5,
    validate: bool = True,
    **read_kwargs: Any,
) -> dict[int, dict[str, Path]]:
    """Write ``Fold1..Fold<n>/{train,vali,test}.txt`` under ``out_dir``.

    Each file is the byte concatenation of its subsets (as the published LETOR folds are),
    written atomically. With ``validate`` every subset is parsed first (``read_kwargs`` go
    to ``read_letor``) and query ids must not repeat across subsets, so malformed input
    stops before anything is written. Returns fold -> split -> written path.
    """
    root, out_dir = Path(root), Path(out_dir)
    subsets = [root / f"S{i}.txt" for i in range(1, n_subsets + 1)]
    fold_files(root, 1, n_subsets)  # raises FileNotFoundError for missing subsets
    if validate:
        from ltr.data.letor import read_letor

        parsed = [read_letor(p, **read_kwargs) for p in subsets]
        try:
            LetorDataset.concat(parsed)
        except ValueError as exc:  # a query id in two subsets would leak between splits
            raise ValueError(f"{root}: a query id appears in more than one subset") from exc
    blobs = {}
    for path in subsets:
        data = path.read_bytes()
        blobs[path] = data if not data or data.endswith(b"\n") else data + b"\n"

    written: dict[int, dict[str, Path]] = {}
    for fold in range(1, n_subsets + 1):
        files = fold_files(root, fold, n_subsets)
        written[fold] = {}
        for split in SPLITS:
            target = out_dir / f"Fold{fold}" / f"{split}.txt"
            with atomic_open(target, "wb") as fh:
                for path in files[split]:
                    fh.write(blobs[path])
            written[fold][split] = target
    logger.info("wrote %d folds under %s", n_subsets, out_dir)
    return written
