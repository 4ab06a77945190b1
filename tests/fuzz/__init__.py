"""Fuzzing the converters with generated hostile inputs (docs/bad_input.md)."""
