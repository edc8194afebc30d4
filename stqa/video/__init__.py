"""Video decoding (PyAV), the shared frame-sampling rule and frame transforms."""
