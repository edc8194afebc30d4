"""The stqa gRPC inference service (installed as ``stqa.server``)."""
