"""One student, one step: pure train/predict steps, optimiser, loss, metrics, pretrained checkpoints."""
