"""AppService: the app's info, as MONAI Label's ``/info`` returns it, typed."""

from __future__ import annotations

import copy
from typing import Any, Dict, FrozenSet, List, Optional

import grpc
from google.protobuf import duration_pb2

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel_api.digests import SUPPORTED
from monailabel_api.v1 import app_pb2, app_pb2_grpc
from monailabel_server.config import ServerConfig
from monailabel_server.convert import to_struct
from monailabel_server.core.infer_request import MIN_CHUNK_SIZE
from monailabel_server.datastore_servicer import status_message

__all__ = ["AppServicer", "labels_map", "effective_train_config", "limits_message"]


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
        config: server settings, whose limits the answer tells (none when absent).
    """

    def __init__(self, app: MONAILabelApp, config: Optional[ServerConfig] = None) -> None:
        self.app = app
        self.config = config

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
                    info=to_struct(_free_form(m, _TYPED_MODEL_KEYS)),
                )
            )
        unavailable = self.app.unavailable_models()
        for model in models:
            model.unavailable_reason = unavailable.get(model.name, "")
        listed = {model.name for model in models}
        models.extend(app_pb2.ModelInfo(name=name, unavailable_reason=reason)
                      for name, reason in sorted(unavailable.items()) if name not in listed)
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
            info=to_struct(_free_form(info, _TYPED_APP_KEYS)),
            server_version=monailabel.__version__,
            limits=limits_message(self.config) if self.config is not None else None,
        )


def limits_message(config: ServerConfig) -> app_pb2.ServerLimits:
    """The limits a client must respect, from the server's settings."""
    return app_pb2.ServerLimits(
        max_message_bytes=config.max_message_bytes,
        max_chunk_size=config.chunk_size,
        min_chunk_size=MIN_CHUNK_SIZE,
        max_volume_bytes=config.max_volume_bytes,
        default_session_ttl=duration_pb2.Duration(seconds=min(config.session_ttl_s, config.max_session_ttl_s)),
        max_session_ttl=duration_pb2.Duration(seconds=config.max_session_ttl_s),
        max_sessions=config.max_sessions,
        upload_ttl=duration_pb2.Duration(seconds=config.upload_ttl_s),
        max_partial_uploads=config.max_partial_uploads,
        digests=list(SUPPORTED),
    )


_INTERACTIVE = {"deepgrow", "deepedit", "scribbles", "annotation"}
# keys of MONAI Label's info dicts that typed fields carry: the Structs keep only the app's own keys
_TYPED_APP_KEYS = frozenset({"name", "description", "version", "labels", "models", "trainers", "strategies",
                             "scoring", "datastore", "train_stats"})
_TYPED_MODEL_KEYS = frozenset({"type", "labels", "dimension", "description"})


def _free_form(values: Dict[str, Any], typed: FrozenSet[str]) -> Dict[str, Any]:
    return {k: v for k, v in values.items() if k not in typed}


def _methods(values: Any) -> List[app_pb2.MethodInfo]:
    return [
        app_pb2.MethodInfo(name=name, description=str((v or {}).get("description") or ""), info=to_struct(v or {}))
        for name, v in (values or {}).items()
    ]
