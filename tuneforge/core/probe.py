"""The frozen-backbone linear probe: a logistic regression trained to convergence on a
pretrained model's pooled features. It is the baseline every image fit is measured against
(a fit that trains less well than this on the same split has wasted the pretrained weights),
and what the small-data defaults must reach (issue 16)."""
from __future__ import annotations

import numpy as np
import torch

from .models import create_model
from .models.base import extract_features


def pooled_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The pooled features (N, D) of `model`'s backbone as its weights are now, for uint8 images."""
    with torch.no_grad():
        return extract_features(model, images, batch_size)[:, 0].float().numpy()


def probe_features(model_name: str, image_size: int, images: dict[str, torch.Tensor], batch_size: int = 256,
                   num_classes: int = 2) -> dict[str, np.ndarray]:
    """The pooled features of `model_name`'s pretrained backbone for each set of uint8 images."""
    model = create_model(model_name, num_classes, image_size, pretrained=True)
    return {k: pooled_features(model, v, batch_size) for k, v in images.items()}


def fit_linear_probe(x: np.ndarray, y: np.ndarray, C: float = 1.0, seed: int = 0):
    """A multinomial logistic regression fitted on the standardised features `x` (lbfgs to
    convergence: the probe is not undertrained, so a fit that beats it beats the features as
    they are); a scikit-learn pipeline that predicts from raw features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000, random_state=seed)).fit(x, y)


def linear_probe(train: tuple[np.ndarray, np.ndarray], evaluate: dict[str, tuple[np.ndarray, np.ndarray]],
                 C: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Accuracy on each `evaluate` set of the linear probe (`fit_linear_probe`) of `train`."""
    clf = fit_linear_probe(*train, C=C, seed=seed)
    return {name: float((clf.predict(x) == y).mean()) for name, (x, y) in evaluate.items()}


def init_head_from_probe(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor, C: float = 1.0,
                         seed: int = 0) -> float:
    """Set `head` to the linear probe of `features` (N, V, D: every view a sample): the
    logistic regression on standardised features, with the standardisation folded into the
    weights so the head takes the raw features. Training then starts from the probe instead of
    from noise (LP-FT, Kumar et al. 2022: with little data a randomly started head moves the
    backbone, or settles, before it is any good). Returns the probe's training accuracy."""
    from sklearn.linear_model import LogisticRegression

    n, v, d = features.shape
    x = features.float().reshape(n * v, d).numpy()
    y = labels.numpy().repeat(v)
    mean, std = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=C, max_iter=3000, random_state=seed).fit((x - mean) / std, y)
    coef, intercept = clf.coef_ / std, clf.intercept_ - (clf.coef_ / std) @ mean
    if len(clf.classes_) == 2 and head.out_features == 2:  # one score z: softmax([0, z]) = sigmoid(z)
        coef, intercept = np.concatenate([np.zeros_like(coef), coef]), np.array([0.0, intercept[0]])
    w = torch.zeros(head.out_features, d)
    b = torch.full((head.out_features,), -1e4)  # a class with no training image is never predicted
    w[clf.classes_], b[clf.classes_] = torch.from_numpy(coef).float(), torch.from_numpy(intercept).float()
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    return float(clf.score((x - mean) / std, y))
