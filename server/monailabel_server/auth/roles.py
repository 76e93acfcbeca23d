"""The one declaration of which role each RPC needs: MONAI Label's REST matrix, per gRPC method.

MONAI Label guards each REST endpoint with one of its roles; the table below gives every RPC the
role of the endpoint that does the same thing:

* user: app info, trainers and strategies, inference and sessions, next sample, listing, reading and
  downloading images and labels, datastore status, job listing, status and watching;
* annotator: uploading images (and asking how much of an upload arrived), the unary upload resource
  calls (also for a volume to infer on: they write to the server's disk), saving labels, editing
  image and label info, starting and cancelling scoring jobs;
* admin: deleting images and labels, starting and cancelling training.

Roles rank ``user < annotator < reviewer < admin`` and a higher role includes the lower ones. In
MONAI Label's Keycloak realm the admin role is a composite of the others, which has the same effect;
ranking them keeps an IdP without composite roles usable. No RPC needs the reviewer role itself
(MONAI Label's endpoints don't either): a reviewer reviews by reading and saving labels, so it ranks
above annotator and below admin.

Adding a service is one entry in :data:`RPC_ROLES`; ``tests/unit/server/test_auth_roles.py`` walks
every RPC of every service in the API and fails when one has no role here.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Dict, FrozenSet, Optional

from monailabel_server.auth.settings import AuthSettings

__all__ = ["Role", "RPC_ROLES", "OPEN_SERVICES", "required_role", "role_name", "rank_of"]


class Role(IntEnum):
    """MONAI Label's roles, ranked: a caller holding a role may do what every lower role may."""

    USER = 1
    ANNOTATOR = 2
    REVIEWER = 3
    ADMIN = 4


USER, ANNOTATOR, ADMIN = Role.USER, Role.ANNOTATOR, Role.ADMIN

#: ``{service full name: {method: role needed}}`` -- every RPC of the API, one line each.
RPC_ROLES: Dict[str, Dict[str, Role]] = {
    "monailabel.v1.AppService": {
        "GetAppInfo": USER,
    },
    "monailabel.v1.DatastoreService": {
        "ListImages": USER,
        "GetImage": USER,
        "UpdateImageInfo": ANNOTATOR,
        "UploadImage": ANNOTATOR,
        "GetUploadStatus": ANNOTATOR,
        "DownloadImage": USER,
        "DeleteImage": ADMIN,
        "SaveLabel": ANNOTATOR,
        "GetLabel": USER,
        "UpdateLabelInfo": ANNOTATOR,
        "DownloadLabel": USER,
        "DeleteLabel": ADMIN,
        "GetDatastoreStatus": USER,
        "CreateUpload": ANNOTATOR,
        "AppendUploadChunk": ANNOTATOR,
        "CommitUpload": ANNOTATOR,
        "DeleteUpload": ANNOTATOR,
    },
    "monailabel.v1.InferService": {
        "Infer": USER,
        "InferVolume": USER,
        "CreateSession": USER,
        "GetSession": USER,
        "DeleteSession": USER,
        "OpenSession": USER,
        "DownloadSessionImage": USER,
        "Interact": USER,
    },
    "monailabel.v1.TrainService": {
        "ListTrainers": USER,
        "StartTrainJob": ADMIN,
        "StartTrainJobs": ADMIN,
    },
    "monailabel.v1.StrategyService": {
        "ListStrategies": USER,
        "ListScoringMethods": USER,
        "GetNextSample": USER,
        "StartScoringJob": ANNOTATOR,
        "StartScoringJobs": ANNOTATOR,
    },
    # jobs of both kinds; cancelling a training job also needs admin (checked by the servicer)
    "monailabel.v1.JobService": {
        "GetJob": USER,
        "ListJobs": USER,
        "CancelJob": ANNOTATOR,
        "WatchJob": USER,
    },
    # model weights are read like models are used; batch inference writes original labels, as scoring writes info
    "monailabel.v1.ModelService": {
        "ListModelVersions": USER,
        "DownloadModel": USER,
        "StartBatchInferJob": ANNOTATOR,
    },
    "monailabel.v1.DatasetService": {
        "GetTrainDatalist": USER,
        "ExportDataset": USER,
    },
    # MONAI Label's /logs and /logs/gpu are admin's
    "monailabel.v1.ServerService": {
        "TailLogs": ADMIN,
        "GetGpuInfo": ADMIN,
    },
}

#: Services every caller may use without a token: health checking always; reflection when the server
#: offers it at all (``--reflection``).
OPEN_SERVICES: FrozenSet[str] = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})


def required_role(method: str) -> Optional[Role]:
    """Returns the role ``/package.Service/Method`` needs, or None when the table doesn't name it."""
    service, _, name = method.lstrip("/").partition("/")
    return RPC_ROLES.get(service, {}).get(name)


def role_name(role: Role, settings: AuthSettings) -> str:
    """The IdP's name of a role (``MONAI_LABEL_AUTH_ROLE_*``)."""
    return {
        Role.USER: settings.role_user,
        Role.ANNOTATOR: settings.role_annotator,
        Role.REVIEWER: settings.role_reviewer,
        Role.ADMIN: settings.role_admin,
    }[role]


def rank_of(role_names: FrozenSet[str], settings: AuthSettings) -> int:
    """The highest rank among a token's role names (0 when it holds none of MONAI Label's roles)."""
    return max((int(r) for r in Role if role_name(r, settings) in role_names), default=0)
