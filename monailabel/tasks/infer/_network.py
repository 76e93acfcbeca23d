"""Loading an infer task's network from its checkpoint, and a cancellable wrapper around it."""

from __future__ import annotations

import copy
import logging
import pickle
from typing import Any, Callable, Optional

import torch

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

logger = logging.getLogger(__name__)

__all__ = ["CancellableNetwork", "load_network"]


class CancellableNetwork:
    """Calls a network, checking first whether the caller cancelled.

    Inferers call their predictor once per forward (a sliding window once per window batch), so the
    check happens before every forward. Attributes are forwarded to the wrapped network.

    Args:
        network: the network.
        cancel_check: returns True once the work should stop.
    """

    def __init__(self, network: Any, cancel_check: Callable[[], bool]) -> None:
        self._network = network
        self._cancel_check = cancel_check

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._cancel_check():
            raise MONAILabelException(MONAILabelError.CANCELLED, "Request cancelled by the caller (inferer)")
        return self._network(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._network, name)


def _torch_load(path: str, device: str) -> Any:
    try:
        return torch.load(path, map_location=torch.device(device), weights_only=True)
    except pickle.UnpicklingError:
        # Checkpoints saved with whole objects (MONAI Label's older handlers) need full unpickling;
        # the file is the app's own model, as trusted as its code.
        logger.info(f"{path}: not a weights-only checkpoint; loading it with full unpickling")
        return torch.load(path, map_location=torch.device(device), weights_only=False)


def load_network(network: Optional[Any], path: Optional[str], device: str, state_key: str, strict: bool) -> Any:
    """Returns a network on ``device``: a copy of ``network`` with the checkpoint's weights, or TorchScript.

    Args:
        network: the network template; None to load ``path`` as TorchScript.
        path: the checkpoint (state dict, ``{state_key: state dict, ...}``, or whole module).
        device: the device.
        state_key: key of the state dict in a checkpoint dict (the whole dict when the key is absent).
        strict: load the state dict strictly.

    Raises:
        MONAILabelException: INFERENCE_ERROR when the checkpoint cannot be loaded.
    """
    try:
        if network is None:
            return torch.jit.load(path, map_location=torch.device(device))
        net = copy.deepcopy(network).to(torch.device(device))
        if path:
            checkpoint = _torch_load(path, device)
            if isinstance(checkpoint, torch.nn.Module):
                state = checkpoint.state_dict()
            elif isinstance(checkpoint, dict):
                state = checkpoint.get(state_key, checkpoint)
            else:
                raise TypeError(f"unexpected checkpoint type {type(checkpoint).__name__}")
            expected = set(net.state_dict().keys())
            if expected != set(state.keys()):
                logger.warning(
                    f"Checkpoint keys differ from the network's: {sorted(expected ^ set(state.keys()))[:10]}"
                )
            net.load_state_dict(state, strict=strict)
        return net
    except MONAILabelException:
        raise
    except Exception as e:
        raise MONAILabelException(
            MONAILabelError.INFERENCE_ERROR, f"Cannot load model '{path}': {type(e).__name__}: {e}"
        ) from e
