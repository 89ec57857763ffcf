"""Trained neural rankers behind the interface the LightGBM baseline also offers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltr.data.dataset import LetorDataset
from ltr.models.neural import SingleListWrapper, build_model
from ltr.training.batching import score_dataset


class NeuralRanker:
    """A trained PyTorch scorer plus what is needed to rebuild it."""

    def __init__(
        self,
        module: torch.nn.Module,
        model_type: str,
        model_params: dict[str, Any],
        loss: str,
        feature_names: list[str],
    ) -> None:
        self.module = module.eval()
        self.model_type = model_type
        self.model_params = dict(model_params)
        self.loss = loss
        self.feature_names = list(feature_names)

    def score(self, ds: LetorDataset) -> np.ndarray:
        """float32 [n_docs]: each query's list scored together."""
        device = next(self.module.parameters()).device
        return score_dataset(self.module, ds, device)

    @torch.no_grad()
    def score_features(self, features: np.ndarray) -> np.ndarray:
        """Scores of one candidate list ``features [n_docs, n_features]`` (the export view)."""
        device = next(self.module.parameters()).device
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=device)
        return self.export_module()(x).cpu().numpy()

    def export_module(self) -> torch.nn.Module:
        return SingleListWrapper(self.module).eval()

    def save(self, directory: Path) -> Path:
        from ltr.utils.io import atomic_path

        path = Path(directory) / "model.pt"
        with atomic_path(path) as tmp:
            torch.save({k: v.cpu() for k, v in self.module.state_dict().items()}, tmp)
        return path

    @classmethod
    def load(
        cls,
        directory: Path,
        model_type: str,
        model_params: dict[str, Any],
        loss: str,
        feature_names: list[str],
    ) -> NeuralRanker:
        module = build_model(model_type, len(feature_names), model_params)
        state = torch.load(Path(directory) / "model.pt", map_location="cpu", weights_only=True)
        module.load_state_dict(state)
        return cls(module, model_type, model_params, loss, feature_names)
