"""Scribbles infer tasks: a likelihood from the user's strokes, refined by a graph cut (no network).

The request carries the image and, under ``label``, a scribbles volume of the image's shape where
background strokes have value ``len(labels) + 1`` (2 without labels) and foreground strokes
``len(labels) + 2`` (3); ``roi`` (``[x0, x1, y0, y1, z0, z1]``) optionally marks everything outside as
background. The graph cut needs the ``numpymaxflow`` package; without it the tasks are listed as
unavailable and calling them fails with FAILED_PRECONDITION.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityRanged, Spacingd

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.scribbles.transforms import (
    AddBackgroundScribblesFromROId,
    ApplyGraphCutOptimisationd,
    MakeISegUnaryd,
    MakeLikelihoodFromScribblesGMMd,
    MakeLikelihoodFromScribblesHistogramd,
    scribbles_transforms_available,
)
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.post import BoundingBoxd, Restored

__all__ = ["GMMBasedGraphCut", "HistogramBasedGraphCut", "ScribblesLikelihoodInferTask"]


class ScribblesLikelihoodInferTask(BasicInferTask):
    """Base of the scribbles tasks: pre-processing, unary term and graph cut; subclasses give the likelihood.

    Args:
        dimension: spatial dimension.
        description: what the task does.
        intensity_range: ``(a_min, a_max, b_min, b_max, clip)`` of the intensity scaling.
        pix_dim: spacing the image is resampled to.
        lamda: weight of the graph cut's pairwise term (per-request ``lamda`` overrides it).
        sigma: intensity scale of the pairwise term (per-request ``sigma`` overrides it).
        labels: label names; they fix the scribble values (see the module).
        config: more user-visible config.
    """

    def __init__(
        self,
        dimension: int = 3,
        description: str = "A post processing step with likelihood + GraphCut for Generic segmentation",
        intensity_range: Sequence[Any] = (-300, 200, 0.0, 1.0, True),
        pix_dim: Sequence[float] = (2.5, 2.5, 5.0),
        lamda: float = 1.0,
        sigma: float = 0.1,
        labels: Any = None,
        config: Optional[Dict[str, Any]] = None,
    ) -> None:
        config = dict(config or {}, lamda=lamda, sigma=sigma)
        super().__init__(path=None, network=None, labels=labels, type=InferType.SCRIBBLES, dimension=dimension,
                         description=description, config=config)
        self.intensity_range = intensity_range
        self.pix_dim = pix_dim
        self.lamda = lamda
        self.sigma = sigma
        self.scribbles_bg_label = len(self.labels) + 1 if self.labels else 2
        self.scribbles_fg_label = len(self.labels) + 2 if self.labels else 3

    def unavailable_reason(self) -> Optional[str]:
        """Says which package is missing when the graph cut cannot run."""
        missing = scribbles_transforms_available()
        if missing:
            return (f"scribbles need the {', '.join(missing)} package (pip install --no-binary numpymaxflow "
                    "--no-build-isolation numpymaxflow)")
        return None

    def pre_transforms(self, data: Optional[Dict[str, Any]] = None) -> Sequence[Callable]:
        a_min, a_max, b_min, b_max, clip = self.intensity_range
        return [
            LoadImaged(keys=["image", "label"]),
            EnsureChannelFirstd(keys=["image", "label"]),
            AddBackgroundScribblesFromROId(scribbles="label", scribbles_bg_label=self.scribbles_bg_label,
                                           scribbles_fg_label=self.scribbles_fg_label),
            Spacingd(keys=["image", "label"], pixdim=self.pix_dim, mode=["bilinear", "nearest"]),
            ScaleIntensityRanged(keys="image", a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=clip),
        ]

    def inferer(self, data: Optional[Dict[str, Any]] = None) -> Any:  # type: ignore[override]
        raise NotImplementedError("the likelihood comes from a subclass")

    def post_transforms(self, data: Optional[Dict[str, Any]] = None) -> Sequence[Callable]:
        return [
            MakeISegUnaryd(image="image", logits="prob", scribbles="label", unary="unary",
                           scribbles_bg_label=self.scribbles_bg_label, scribbles_fg_label=self.scribbles_fg_label),
            ApplyGraphCutOptimisationd(unary="unary", pairwise="image", post_proc_label="pred", lamda=self.lamda,
                                       sigma=self.sigma),
            Restored(keys="pred", ref_image="image"),
            BoundingBoxd(keys="pred", result="result", bbox="bbox"),
        ]


class HistogramBasedGraphCut(ScribblesLikelihoodInferTask):
    """Histogram likelihoods + graph cut (Wang et al., IEEE TMI 2018).

    Args:
        num_bins: histogram bins.
        (others as :class:`ScribblesLikelihoodInferTask`)
    """

    def __init__(
        self,
        dimension: int = 3,
        description: str = "A post processing step with histogram-based GraphCut for Generic segmentation",
        intensity_range: Sequence[Any] = (-300, 200, 0.0, 1.0, True),
        pix_dim: Sequence[float] = (2.5, 2.5, 5.0),
        lamda: float = 1.0,
        sigma: float = 0.1,
        num_bins: int = 64,
        labels: Any = None,
        config: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(dimension, description, intensity_range, pix_dim, lamda, sigma, labels,
                         dict(config or {}, num_bins=num_bins))
        self.num_bins = num_bins

    def inferer(self, data: Optional[Dict[str, Any]] = None) -> Any:  # type: ignore[override]
        return Compose([MakeLikelihoodFromScribblesHistogramd(
            image="image", scribbles="label", post_proc_label="prob", scribbles_bg_label=self.scribbles_bg_label,
            scribbles_fg_label=self.scribbles_fg_label, num_bins=int((data or {}).get("num_bins", self.num_bins)))])


class GMMBasedGraphCut(ScribblesLikelihoodInferTask):
    """Gaussian-mixture likelihoods + graph cut (GrabCut-like; Rother et al. 2004, Wang et al. 2018).

    Args:
        num_mixtures: mixture components per class.
        (others as :class:`ScribblesLikelihoodInferTask`)
    """

    def __init__(
        self,
        dimension: int = 3,
        description: str = "A post processing step with GMM-based GraphCut for Generic segmentation",
        intensity_range: Sequence[Any] = (-300, 200, 0.0, 1.0, True),
        pix_dim: Sequence[float] = (2.5, 2.5, 5.0),
        lamda: float = 1.0,
        sigma: float = 0.1,
        num_mixtures: int = 20,
        labels: Any = None,
        config: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(dimension, description, intensity_range, pix_dim, lamda, sigma, labels,
                         dict(config or {}, num_mixtures=num_mixtures))
        self.num_mixtures = num_mixtures

    def inferer(self, data: Optional[Dict[str, Any]] = None) -> Any:  # type: ignore[override]
        return Compose([MakeLikelihoodFromScribblesGMMd(
            image="image", scribbles="label", post_proc_label="prob", scribbles_bg_label=self.scribbles_bg_label,
            scribbles_fg_label=self.scribbles_fg_label,
            num_mixtures=int((data or {}).get("num_mixtures", self.num_mixtures)))])
