"""The server's core: state, resources and rules, free of protobuf; servicers only convert messages to and from it."""
