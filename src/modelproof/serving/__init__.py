"""The HTTP server: serve a model file over the Open Inference Protocol (V2)."""
