"""Visual backbones and the ST-VQA model."""
