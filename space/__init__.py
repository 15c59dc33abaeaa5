"""What can be built, searched and counted; the bottom layer, which imports no other package.

- ``zoo`` (names in ``catalog``): the handcrafted networks, CIFAR and torchvision ResNets and the
  published DARTS genotypes' networks, all with the same ``forward_features`` / ``forward_head``.
- The search space as data: ``operations`` (``PRIMITIVES``, ``OPS``, each operation's MACs),
  ``genotypes`` (the derived architecture as an immutable value), ``network`` (the network a
  genotype builds, and the cell layout it shares with the supernet).
- ``supernet``: DARTS's differentiable supernet, its derivation and its expected MFLOPs;
  ``fused`` computes its cells per state, on the CPU forms of ``kernels`` and ``pooling``.
- ``flops``: the one MFLOPs and parameter counter of the product.
- ``registry``: named extension points (strategies, methods, datasets, teachers) loaded from
  entry-point groups.
"""
