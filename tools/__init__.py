"""Command-line tools (data set generation and other helpers)."""
