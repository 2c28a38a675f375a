"""The demo: two stub LLM backends and ``creditgate demo``, which runs everything in one process."""
