"""Build helpers that run at install time (protobuf code generation)."""
