"""A linear discriminant of the labelled spectra, the optional teacher of training (``--teacher
discriminant``).

scikit-learn's ``LinearDiscriminantAnalysis`` with the within-class covariance shrunk by the
Ledoit-Wolf formula: a few labelled pixels per class cannot estimate a full covariance of a
couple of hundred bands, and the shrunk estimate reads them well (the benchmark's ``lda``
baseline). It is fitted once before training, on spectra standardised by the scene's band
statistics, and is not part of the model file: it only chooses the targets of training.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis


@dataclass
class Discriminant:
    """A fitted discriminant: ``model`` on spectra standardised by ``mean`` and ``std``."""

    model: LinearDiscriminantAnalysis
    mean: np.ndarray
    std: np.ndarray

    def log_posteriors(self, spectra: np.ndarray, n_classes: int) -> np.ndarray:
        """Log class probabilities [N, n_classes] (float32) of ``spectra`` [N, bands]; a class
        the discriminant never saw gets probability 0 (log = -inf clamped to -1e4)."""
        known = self.model.predict_log_proba(self._standardise(spectra))
        out = np.full((len(spectra), n_classes), -1e4, dtype=np.float32)
        out[:, self.model.classes_] = np.maximum(known, -1e4)
        return out

    def _standardise(self, spectra: np.ndarray) -> np.ndarray:
        return (np.asarray(spectra, dtype=np.float64) - self.mean) / self.std


def fit_discriminant(spectra: np.ndarray, targets: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Discriminant:
    """A shrinkage linear discriminant of ``spectra`` [N, bands] labelled ``targets`` [N] (class
    indices), with equal class priors (few-shot samples say nothing about the classes' areas)."""
    classes = np.unique(targets)
    scale = np.where(np.asarray(std, dtype=np.float64) > 0, std, 1.0)
    model = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto",
                                       priors=np.full(len(classes), 1.0 / len(classes)))
    fitted = Discriminant(model, np.asarray(mean, dtype=np.float64), scale)
    with warnings.catch_warnings():  # a class of one spectrum adds no within-class scatter, as it should
        warnings.filterwarnings("ignore", message="Only one sample available")
        model.fit(fitted._standardise(spectra), targets)
    return fitted
