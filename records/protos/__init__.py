"""Protobuf schemas of the record contract; generated modules are built on first import."""
from buildtools.protos import ensure_compiled

ensure_compiled(__path__[0])
