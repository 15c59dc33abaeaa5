"""A toy plug-in for reskd: a random-search strategy and a cosine KD method."""
