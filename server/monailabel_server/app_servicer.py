"""AppService: the app's info, as MONAI Label's ``/info`` returns it, typed."""

from __future__ import annotations

import copy
from typing import Any, Dict, List

import grpc

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel_api.v1 import app_pb2, app_pb2_grpc
from monailabel_server.convert import to_struct
from monailabel_server.datastore_servicer import status_message

__all__ = ["AppServicer", "labels_map", "effective_train_config"]


def labels_map(labels: Any) -> Dict[str, int]:
    """Returns labels as ``{name: index}`` from MONAI Label's dict or list forms."""
    if isinstance(labels, dict):
        out: Dict[str, int] = {}
        for k, v in labels.items():
            try:
                out[str(k)] = int(v)
            except (TypeError, ValueError):
                continue
        return out
    if isinstance(labels, (list, tuple)):
        return {str(name): i + 1 for i, name in enumerate(labels)}
    if isinstance(labels, str):
        return {labels: 1}
    return {}


def effective_train_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """Returns a trainer's config with ``device`` and ``multi_gpu`` as a run with its defaults would use
    them on this machine: MONAI Label's defaults say ``cuda`` and multi-GPU, which a machine without
    CUDA runs as one CPU process.

    Args:
        config: the trainer's config (list values are choices; the first is the default).
    """
    if "device" not in config and "multi_gpu" not in config:
        return config
    from monailabel.interfaces.exception import MONAILabelException
    from monailabel.tasks.train.runner import plan_processes

    request = {k: (v[0] if isinstance(v, list) and v else v) for k, v in config.items()}
    try:
        world_size, use_cuda = plan_processes(request)
    except (MONAILabelException, ValueError, TypeError):
        return config  # a config the trainer itself will reject: shown as it is
    out = dict(config)
    wanted = str(request.get("device") or "cuda")
    out["device"] = wanted if use_cuda else "cpu"
    if "multi_gpu" in out:
        out["multi_gpu"] = world_size > 1
    return out


class AppServicer(app_pb2_grpc.AppServiceServicer):
    """Serves app info.

    Args:
        app: the app.
    """

    def __init__(self, app: MONAILabelApp) -> None:
        self.app = app

    def GetAppInfo(
        self, request: app_pb2.GetAppInfoRequest, context: grpc.ServicerContext
    ) -> app_pb2.GetAppInfoResponse:
        info = copy.copy(self.app.info())
        info["trainers"] = {
            name: dict(t, config=effective_train_config(t.get("config") or {})) if isinstance(t, dict) else t
            for name, t in (info.get("trainers") or {}).items()
        }
        models = []
        for name, m in (info.get("models") or {}).items():
            m = m or {}
            models.append(
                app_pb2.ModelInfo(
                    name=name,
                    type=str(getattr(m.get("type"), "value", m.get("type", ""))),
                    labels=labels_map(m.get("labels")),
                    dimension=int(m.get("dimension") or 0),
                    description=str(m.get("description") or ""),
                    interactive=str(getattr(m.get("type"), "value", m.get("type", ""))) in _INTERACTIVE,
                    info=to_struct(m),
                )
            )
        stats = info.get("train_stats") or {}
        trainers = [
            app_pb2.TrainerInfo(
                name=name,
                description=str((t or {}).get("description") or ""),
                config=to_struct((t or {}).get("config") or {}),
                stats=to_struct(stats.get(name) or {}),
            )
            for name, t in (info.get("trainers") or {}).items()
        ]
        return app_pb2.GetAppInfoResponse(
            name=str(info.get("name") or ""),
            description=str(info.get("description") or ""),
            version=str(info.get("version") or ""),
            labels=labels_map(info.get("labels")),
            models=models,
            trainers=trainers,
            strategies=_methods(info.get("strategies")),
            scoring_methods=_methods(info.get("scoring")),
            datastore=status_message(self.app.datastore().status()),
            info=to_struct(info),
            server_version=monailabel.__version__,
        )


_INTERACTIVE = {"deepgrow", "deepedit", "scribbles", "annotation"}


def _methods(values: Any) -> List[app_pb2.MethodInfo]:
    return [
        app_pb2.MethodInfo(name=name, description=str((v or {}).get("description") or ""), info=to_struct(v or {}))
        for name, v in (values or {}).items()
    ]
