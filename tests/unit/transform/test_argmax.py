"""ArgmaxLabelsd gives torch.argmax's labels, in the smallest integer type, keeping the affine."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from monailabel.transform.argmax import ArgmaxLabelsd


@pytest.mark.parametrize("channels", [1, 2, 3, 7])
def test_matches_torch_argmax(channels: int) -> None:
    torch.manual_seed(channels)
    scores = torch.randn(channels, 17, 9, 5)
    labels = ArgmaxLabelsd(keys="pred")({"pred": scores})["pred"]
    assert labels.dtype == torch.uint8 and labels.shape == (1, 17, 9, 5)
    assert torch.equal(labels.long(), torch.argmax(scores, 0, keepdim=True))


def test_ties_go_to_the_lower_channel_and_meta_is_kept() -> None:
    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0]))
    scores = MetaTensor(torch.zeros(3, 4, 4, 4), affine=affine)
    scores[2, 0, 0, 0] = 1.0
    labels = ArgmaxLabelsd.argmax(scores)
    assert isinstance(labels, MetaTensor)
    assert torch.equal(labels.affine, affine)
    assert int(labels[0, 0, 0, 0]) == 2 and int(labels.sum()) == 2
