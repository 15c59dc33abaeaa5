"""How res-student architectures are found (STACNAS-style differentiable search)."""
