"""Ollama's model store (``~/.ollama/models``): models ``host/namespace/model``, revisions = tags, shared blobs."""
