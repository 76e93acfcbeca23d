"""The gRPC server that hosts a MONAI Label app: one thin servicer per service of ``monailabel.v1``."""

from monailabel_server.config import ServerConfig

__all__ = ["ServerConfig"]
