"""Test cases in and out: case files (jsonl/csv/yaml) and generated cases."""
