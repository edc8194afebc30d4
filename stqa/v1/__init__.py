"""Generated protobuf/gRPC stubs for ``protos/stqa/v1/video_qa.proto`` (see scripts/gen_proto.py)."""
