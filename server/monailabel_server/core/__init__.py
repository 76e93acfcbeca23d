"""The server's core: resources and rules that the servicers only translate to and from protobuf."""
