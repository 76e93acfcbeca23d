"""The server's state and pipelines, free of protobuf: servicers convert messages to and from these."""
