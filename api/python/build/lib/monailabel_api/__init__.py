"""The monailabel.v1 wire contract for Python: generated messages and stubs, and the chunk codec.

Client and server both depend on this package, and it depends on neither: it needs only grpcio,
protobuf and numpy. The generated modules live in :mod:`monailabel_api.v1`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
