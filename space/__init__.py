"""What can be built: the model zoo, (later) the search space, and FLOPs accounting."""
