"""Generated protobuf and gRPC code of the monailabel.v1 API (do not edit)."""
