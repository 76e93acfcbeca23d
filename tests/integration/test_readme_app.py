"""The README's "Write your own app" main.py: read from the README, served, and every part run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from monailabel.datasets import write_phantoms
from monailabel_client import MonaiLabelClient
from monailabel_server.app_loader import load_app
from monailabel_server.config import ServerConfig
from monailabel_server.server import start

pytestmark = pytest.mark.slow  # trains and scores a model

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_main_py() -> str:
    """The python block of the README that starts with ``# main.py``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (main_py,) = [b for b in blocks if b.startswith("# main.py\n")]
    return main_py


def test_readme_app_infers_over_grpc_trains_scores_and_selects(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "main.py").write_text(readme_main_py())
    studies = tmp_path / "studies"
    write_phantoms(studies, count=6, shape=(32, 32, 32), labeled=3)

    # served as it is: app info and an inference over gRPC
    running = start(ServerConfig(app_dir=app_dir, studies=str(studies), port=0))
    try:
        with MonaiLabelClient(running.address, timeout=60) as client:
            info = client.info()
            assert info.name == "my-app" and [m.name for m in info.models] == ["my_model"]
            assert [t.name for t in info.trainers] == ["my_model"]
            assert [s.name for s in info.strategies] == ["my_score"]
            assert [s.name for s in info.scoring_methods] == ["my_scoring_method"]
            mask = client.infer("my_model", image_id="phantom_005").array()
            assert mask.shape == (32, 32, 32) and set(np.unique(mask).tolist()) <= {0, 1}
    finally:
        running.stop(grace=1)

    # the train task, the scoring method and the strategy, run in process
    app = load_app(app_dir, str(studies), {})
    torch.manual_seed(0)
    stats = app.train({"model": "my_model", "max_epochs": 2, "val_split": 0.34, "device": "cpu",
                       "dataset": "Dataset"})
    assert stats["epoch"] == 2 and (app_dir / "model" / "model.pt").is_file()
    scores = app.scoring({"method": "my_scoring_method"})
    assert sorted(scores) == ["phantom_003", "phantom_004", "phantom_005"]
    assert all(0.0 <= s["my_score"] <= 1.0 and s["my_score_timestamp"] > 0 for s in scores.values())
    assert app.scoring({"method": "my_scoring_method"}) == {}  # same model: nothing to score again
    print({k: round(v["my_score"], 4) for k, v in scores.items()})
    best = max(scores, key=lambda i: scores[i]["my_score"])
    assert scores[best]["my_score"] > 0  # a model trained two epochs is unsure somewhere
    assert app.next_sample({"strategy": "my_score"})["id"] == best
