"""Transforms of the scribbles tasks: ROI background, intensity likelihoods, ISeg unaries, graph cut."""

from __future__ import annotations

from typing import Any, Dict, Hashable, Mapping, Optional, Sequence

import numpy as np
from monai.transforms import Transform

__all__ = [
    "AddBackgroundScribblesFromROId",
    "ApplyGraphCutOptimisationd",
    "MakeISegUnaryd",
    "MakeLikelihoodFromScribblesGMMd",
    "MakeLikelihoodFromScribblesHistogramd",
]

_EPS = 1e-7


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


class AddBackgroundScribblesFromROId(Transform):
    """Marks everything outside the request's ``roi`` (``[x0, x1, y0, y1, z0, z1]``) as background scribble.

    Args:
        scribbles: the scribbles key (channel first).
        roi_key: the request key of the ROI.
        scribbles_bg_label: the background scribble value.
        scribbles_fg_label: the foreground scribble value.
    """

    def __init__(self, scribbles: str, roi_key: str = "roi", scribbles_bg_label: int = 2,
                 scribbles_fg_label: int = 3) -> None:
        self.scribbles = scribbles
        self.roi_key = roi_key
        self.scribbles_bg_label = scribbles_bg_label
        self.scribbles_fg_label = scribbles_fg_label

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        roi = d.get(self.roi_key)
        if roi:
            scribbles = d[self.scribbles]
            outside = np.ones(tuple(scribbles.shape[1:]), dtype=bool)
            bounds = [slice(int(roi[2 * i]), int(roi[2 * i + 1])) for i in range(len(roi) // 2)]
            outside[tuple(bounds)] = False
            values = _np(scribbles).copy()
            values[0][outside & (values[0] != self.scribbles_fg_label)] = self.scribbles_bg_label
            d[self.scribbles] = type(scribbles)(values) if hasattr(scribbles, "meta") else values
            if hasattr(scribbles, "meta"):
                d[self.scribbles].meta = scribbles.meta
        return d


class _Likelihood(Transform):
    """Base of the likelihood transforms: ``post_proc_label = [P(bg), P(fg)]`` per voxel from the scribbled voxels."""

    def __init__(self, image: str, scribbles: str, post_proc_label: str = "prob", scribbles_bg_label: int = 2,
                 scribbles_fg_label: int = 3, normalise: bool = True) -> None:
        self.image = image
        self.scribbles = scribbles
        self.post_proc_label = post_proc_label
        self.scribbles_bg_label = scribbles_bg_label
        self.scribbles_fg_label = scribbles_fg_label
        self.normalise = normalise

    def model(self, values: np.ndarray) -> Any:
        raise NotImplementedError

    def density(self, model: Any, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        image = _np(d[self.image]).astype(np.float32)[0]
        scribbles = _np(d[self.scribbles])[0]
        probs = []
        for value in (self.scribbles_bg_label, self.scribbles_fg_label):
            samples = image[scribbles == value]
            if samples.size == 0:  # no stroke of this kind: uninformative
                probs.append(np.full(image.shape, 0.5, dtype=np.float32))
                continue
            probs.append(self.density(self.model(samples), image).astype(np.float32))
        prob = np.stack(probs)
        if self.normalise:
            prob = prob / np.maximum(prob.sum(0, keepdims=True), _EPS)
        d[self.post_proc_label] = prob
        return d


class MakeLikelihoodFromScribblesHistogramd(_Likelihood):
    """Likelihoods from intensity histograms of the background and foreground scribbles.

    Args:
        num_bins: histogram bins over the (scaled) intensity range.
        (others as the base)
    """

    def __init__(self, image: str, scribbles: str, post_proc_label: str = "prob", scribbles_bg_label: int = 2,
                 scribbles_fg_label: int = 3, num_bins: int = 64, normalise: bool = True) -> None:
        super().__init__(image, scribbles, post_proc_label, scribbles_bg_label, scribbles_fg_label, normalise)
        self.num_bins = num_bins

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        image = _np(data[self.image])
        self._range = (float(image.min()), float(image.max()) if image.max() > image.min() else float(image.min()) + 1)
        return super().__call__(data)

    def model(self, values: np.ndarray) -> Any:
        hist, edges = np.histogram(values, bins=self.num_bins, range=self._range, density=True)
        return hist + _EPS, edges

    def density(self, model: Any, values: np.ndarray) -> np.ndarray:
        hist, edges = model
        idx = np.clip(np.digitize(values, edges) - 1, 0, len(hist) - 1)
        return hist[idx]


class MakeLikelihoodFromScribblesGMMd(_Likelihood):
    """Likelihoods from Gaussian mixtures fitted to the intensities of the background and foreground scribbles.

    Args:
        num_mixtures: components per mixture (fewer when a stroke has fewer voxels).
        (others as the base)
    """

    def __init__(self, image: str, scribbles: str, post_proc_label: str = "prob", scribbles_bg_label: int = 2,
                 scribbles_fg_label: int = 3, num_mixtures: int = 20, normalise: bool = True) -> None:
        super().__init__(image, scribbles, post_proc_label, scribbles_bg_label, scribbles_fg_label, normalise)
        self.num_mixtures = num_mixtures

    def model(self, values: np.ndarray) -> Any:
        from sklearn.mixture import GaussianMixture

        # A stroke has few voxels: at least ~10 per component, and a covariance floor (intensities are
        # scaled to about [0, 1]) keep the mixture from collapsing onto the stroke's exact values.
        n = int(max(1, min(self.num_mixtures, np.unique(values).size, values.size // 10)))
        return GaussianMixture(n_components=n, reg_covar=1e-3, random_state=0).fit(values.reshape(-1, 1))

    def density(self, model: Any, values: np.ndarray) -> np.ndarray:
        return np.exp(model.score_samples(values.reshape(-1, 1))).reshape(values.shape)


class MakeISegUnaryd(Transform):
    """The unary term of interactive segmentation (Wang et al. 2018, eq. 7): likelihoods, with scribbles as certainties.

    Args:
        image: the image key.
        logits: the likelihood key (``[P(bg), P(fg)]``).
        scribbles: the scribbles key.
        unary: where the unary term goes.
        scribbles_bg_label: the background scribble value.
        scribbles_fg_label: the foreground scribble value.
    """

    def __init__(self, image: str, logits: str, scribbles: str, unary: str = "unary", scribbles_bg_label: int = 2,
                 scribbles_fg_label: int = 3) -> None:
        self.image = image
        self.logits = logits
        self.scribbles = scribbles
        self.unary = unary
        self.scribbles_bg_label = scribbles_bg_label
        self.scribbles_fg_label = scribbles_fg_label

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        prob = np.clip(_np(d[self.logits]).astype(np.float32), _EPS, 1.0 - _EPS)
        scribbles = _np(d[self.scribbles])[0]
        prob[0][scribbles == self.scribbles_bg_label] = 1.0 - _EPS
        prob[1][scribbles == self.scribbles_bg_label] = _EPS
        prob[0][scribbles == self.scribbles_fg_label] = _EPS
        prob[1][scribbles == self.scribbles_fg_label] = 1.0 - _EPS
        d[self.unary] = prob
        return d


class ApplyGraphCutOptimisationd(Transform):
    """Binary graph cut (``numpymaxflow.maxflow``) of the unary term, with image-contrast pairwise weights.

    Args:
        unary: the unary key (``[P(bg), P(fg)]``).
        pairwise: the image key the pairwise term is computed from.
        post_proc_label: where the ``(1, ...)`` 0/1 label goes.
        lamda: weight of the pairwise term.
        sigma: intensity scale of the pairwise term.
        connectivity: neighbourhood (6/18/26 in 3D, 4/8 in 2D); None for numpymaxflow's default.
    """

    def __init__(self, unary: str, pairwise: str, post_proc_label: str = "pred", lamda: float = 8.0,
                 sigma: float = 0.1, connectivity: Optional[int] = None) -> None:
        self.unary = unary
        self.pairwise = pairwise
        self.post_proc_label = post_proc_label
        self.lamda = lamda
        self.sigma = sigma
        self.connectivity = connectivity

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        import numpymaxflow

        d = dict(data)
        unary = np.ascontiguousarray(_np(d[self.unary]), dtype=np.float32)
        pairwise = np.ascontiguousarray(_np(d[self.pairwise]), dtype=np.float32)
        lamda = float(d.get("lamda", self.lamda))
        sigma = float(d.get("sigma", self.sigma))
        connectivity = self.connectivity or (26 if unary.ndim == 4 else 8)
        d[self.post_proc_label] = numpymaxflow.maxflow(pairwise, unary, lamda, sigma, connectivity).astype(np.uint8)
        return d


def scribbles_transforms_available() -> Sequence[str]:
    """Names of the optional packages the scribbles need that are missing (empty when all are there)."""
    try:
        import numpymaxflow  # noqa: F401
    except Exception:  # ImportError, or a build against another numpy
        return ["numpymaxflow"]
    return []
