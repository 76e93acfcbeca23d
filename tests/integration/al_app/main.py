"""An active learning test app, copied into a temporary folder by the tests.

It holds MONAI Label's documented example (``MyScoreGeneratorMethod`` and ``SelectImageWithMyScore`` from
the Modules Overview, with the gaps of the snippet filled: a constructor, and the undefined name in its
log line), the ready-made strategies and scoring methods, a tiny dropout UNet for epistemic scoring, a
trainer that publishes a new scoring model at once, and tasks that misbehave on purpose.

Files: ``model/scoring_model.ts`` (TorchScript, written by the tests), ``model/dropout_unet.pt``
(created at start). Conf: ``auto_update_scoring`` (MONAI Label's, here per app).
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any, Dict

import torch
from monai.inferers import SimpleInferer
from monai.networks.nets import UNet
from monai.transforms import Activationsd, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.epistemic import Epistemic
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.tasks.scoring.dice import Dice
from monailabel.tasks.scoring.epistemic_v2 import EpistemicScoring
from monailabel.tasks.scoring.sum import Sum
from monailabel.utils.others.atomic import atomic_write

logger = logging.getLogger(__name__)


# ---- MONAI Label's documented example ---------------------------------------------------------------

class MyScoreGeneratorMethod(ScoringMethod):
    def __init__(self, model: str, device: str = "cpu", num_samples: int = 1) -> None:
        super().__init__("Scores every unlabeled image with a TorchScript scoring model")
        self.scoring_model_path = model
        self.device = device
        self.num_samples = num_samples

    def __call__(self, request, datastore: Datastore):
        result = {}

        scoring_model_timestamp = int(os.stat(self.scoring_model_path).st_mtime)
        scoring_model = torch.jit.load(self.scoring_model_path)

        if not scoring_model:
            return None

        scoring_model = scoring_model.to(self.device).eval()

        skipped = 0
        unlabeled_images = datastore.get_unlabeled_images()
        num_samples = request.get("num_samples", self.num_samples)  # noqa: F841 - as in the documentation

        for image_id in unlabeled_images:
            image_info = datastore.get_image_info(image_id)
            prev_timestamp = image_info.get("my_score_timestamp", 0)

            # if the timestamps match we dont' need to recompute score
            if prev_timestamp == scoring_model_timestamp:
                skipped += 1
                continue

            with torch.no_grad():
                data = {"image": datastore.get_image_uri(image_id)}
                my_score = scoring_model(data)

            if self.device == "cuda":
                torch.cuda.empty_cache()

            # add `my_score` in datastore to use later in `SelectImageWithMyScore`
            info = {"my_score": my_score, "my_score_timestamp": scoring_model_timestamp}
            datastore.update_image_info(image_id, info)
            result[image_id] = info

        return result


class SelectImageWithMyScore(Strategy):
    def __init__(self) -> None:
        super().__init__("The unlabeled image with the highest my_score")

    def __call__(self, request, datastore: Datastore):
        images = datastore.get_unlabeled_images()
        if not len(images):
            return None

        my_scores = {image: datastore.get_image_info(image).get("my_score", 0) for image in images}

        # default to picking at random if `my_score` is not available
        if sum(my_scores.values()) == 0:
            image = random.choice(images)
            logger.info(f"Randomly selected Image '{image}'")
        else:
            my_max_score, image = max(zip(my_scores.values(), my_scores.keys()))  # noqa: B905
            logger.info(f"Selected image '{image}' using `my_score` ({my_max_score})")
        return image


# ---- epistemic scoring through an infer task with dropout -------------------------------------------

def make_dropout_unet() -> UNet:
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), dropout=0.3)


class DropoutSegmentation(BasicInferTask):
    """A tiny two-class UNet run with dropout on (train mode), returning its softmax."""

    def __init__(self, path: str) -> None:
        super().__init__(
            path=path, network=make_dropout_unet(), labels={"organ": 1}, dimension=3,
            description="tiny dropout UNet", train_mode=True, skip_writer=True,
        )

    def pre_transforms(self, data=None):
        return [LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"), ScaleIntensityd(keys="image")]

    def inferer(self, data=None):
        return SimpleInferer()

    def inverse_transforms(self, data=None):
        return []

    def post_transforms(self, data=None):
        return [Activationsd(keys="pred", softmax=True)]


# ---- a trainer that publishes a new scoring model at once ---------------------------------------------

class PublishScoringModel(TrainTask):
    """Publishes the scoring model again: a new model version, with a later whole-second timestamp."""

    def __init__(self, publish_path: str) -> None:
        super().__init__("Publishes a new scoring model version")
        self._publish_path = publish_path

    def __call__(self, request, datastore: Datastore):
        before = int(os.stat(self._publish_path).st_mtime)
        model = torch.jit.load(self._publish_path)
        atomic_write(self._publish_path, lambda f: torch.jit.save(model, f))
        stamp = max(time.time(), before + 1.0)  # scores are cached by whole seconds, as in MONAI Label
        os.utime(self._publish_path, (stamp, stamp))
        return {"published": self._publish_path}


# ---- tasks that misbehave -------------------------------------------------------------------------------

class ExplodingStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__("Raises a RuntimeError")

    def __call__(self, request, datastore: Datastore):
        raise RuntimeError("strategy exploded on purpose")


class PickyStrategy(First):
    """First, with a parameter ``top`` that must be an integer in [1, 10]."""

    def validate(self, request: Dict[str, Any]) -> None:
        top = request.get("top", 1)
        if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= 10:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"'top' must be in [1, 10]; got {top!r}")


class ExplodingScoring(ScoringMethod):
    def __init__(self) -> None:
        super().__init__("Raises a RuntimeError")

    def __call__(self, request, datastore: Datastore):
        print("about to explode", flush=True)
        raise RuntimeError("scoring exploded on purpose")


class SlowScoring(ScoringMethod):
    def __init__(self) -> None:
        super().__init__("Takes a minute, for cancel tests")

    def __call__(self, request, datastore: Datastore):
        for i in range(600):
            print(f"slow scoring step {i}", flush=True)
            time.sleep(0.1)
        return {}


class ActiveLearningApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        self.model_dir = os.path.join(app_dir, "model")
        self.scoring_model = os.path.join(self.model_dir, "scoring_model.ts")
        self.dropout_model = os.path.join(self.model_dir, "dropout_unet.pt")
        os.makedirs(self.model_dir, exist_ok=True)
        if not os.path.exists(self.dropout_model):
            torch.manual_seed(0)
            state = {"model": make_dropout_unet().state_dict()}
            atomic_write(self.dropout_model, lambda f: torch.save(state, f))
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="active-learning", version="0.1")

    def init_infers(self) -> Dict[str, InferTask]:
        return {"dropout": DropoutSegmentation(self.dropout_model)}

    def init_trainers(self) -> Dict[str, TrainTask]:
        return {"publish": PublishScoringModel(self.scoring_model)}

    def init_strategies(self) -> Dict[str, Strategy]:
        return {
            "random": Random(),
            "first": First(),
            "epistemic": Epistemic(),
            "my_score": SelectImageWithMyScore(),
            "picky": PickyStrategy(),
            "exploding": ExplodingStrategy(),
        }

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        methods: Dict[str, ScoringMethod] = {"my_scoring_method": MyScoreGeneratorMethod(model=self.scoring_model)}
        if self.conf.get("only_my_score", "false") != "true":
            methods.update(
                epistemic=EpistemicScoring(self.infers_for_scoring(), simulation_size=3),
                dice=Dice(),
                sum=Sum(),
                exploding=ExplodingScoring(),
                slow=SlowScoring(),
            )
        return methods

    def infers_for_scoring(self) -> DropoutSegmentation:
        return DropoutSegmentation(self.dropout_model)
