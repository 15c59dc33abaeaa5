"""How knowledge moves: datasets, KD losses, the training loop and the ResKD stages."""
