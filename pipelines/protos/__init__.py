"""Protobuf schema of pipeline.config. The *_pb2 modules are built by `make protos`."""
from core.protos import generated_module


def __getattr__(name: str):  # `from ... import x_pb2` before x_pb2 is imported
    return generated_module(__name__, name)
