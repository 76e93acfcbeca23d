"""MONAI Label's documented infer example, as an app folder, served over gRPC unmodified."""

from __future__ import annotations

import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.networks.nets import UNet

from monailabel.datasets import write_phantoms
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import start

MAIN_PY = textwrap.dedent('''
    import os

    from monai.inferers import SimpleInferer
    from monai.networks.nets import UNet
    from monai.transforms import (LoadImaged, EnsureChannelFirstd, ToNumpyd, Activationsd, AsDiscreted, ToNumpyd)

    from monailabel.interfaces import MONAILabelApp
    from monailabel.interfaces.tasks import InferTask


    class MyInfer(InferTask):

      def pre_transforms(self, data=None):
          return [
              LoadImaged(keys="image"),
              EnsureChannelFirstd(keys="image"),
              ToNumpyd(keys="image"),
          ]

      def inferer(self, data=None):
          return SimpleInferer()

      def post_transforms(self, data=None):
          return [
              Activationsd(keys="pred", sigmoid=True),
              AsDiscreted(keys="pred", threshold=0.5),
              ToNumpyd(keys="pred"),
          ]


    class MyApp(MONAILabelApp):

      def __init__(self, app_dir, studies, conf):
        self.final_model = os.path.join(app_dir, "model", "model.pt")
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="doc-example")

      def init_infers(self):
        network = UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=(4, 8), strides=(2,))
        return {
          "segmentation_spleen": MyInfer(self.final_model, network),
        }
''')


def test_documented_infer_task_runs_over_grpc(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    (app_dir / "model").mkdir(parents=True)
    (app_dir / "main.py").write_text(MAIN_PY)
    torch.manual_seed(0)
    network = UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=(4, 8), strides=(2,))
    with torch.no_grad():  # a bias that makes every voxel foreground: a result the test can predict
        for p in network.parameters():
            p.zero_()
        last = [m for m in network.modules() if isinstance(m, torch.nn.ConvTranspose3d)][-1]
        last.bias.fill_(5.0)
    torch.save(network.state_dict(), app_dir / "model" / "model.pt")
    studies = tmp_path / "studies"
    write_phantoms(studies, count=1, shape=(24, 24, 16), labeled=0)
    running = start(ServerConfig(app_dir=app_dir, studies=str(studies), port=0))
    try:
        with MonaiLabelClient(running.address) as client:
            info = client.info()
            assert info.name == "doc-example"
            assert [m.name for m in info.models] == ["segmentation_spleen"]
            out = client.infer("segmentation_spleen", image_id="phantom_000")
            mask, affine = out.array_and_affine()
            image = nib.load(str(studies / "phantom_000.nii.gz"))
            assert mask.shape == image.shape
            assert mask.dtype == np.uint8
            assert np.all(mask == 1)  # sigmoid(5) > 0.5 everywhere
            np.testing.assert_allclose(affine, image.affine, atol=1e-5)
    finally:
        running.stop(grace=1)
