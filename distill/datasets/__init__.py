"""The built-in datasets' loaders, one module per source (shipped arrays, CIFAR, image folders),
and the transforms they share. ``distill.catalog`` names them; ``distill.data`` loads by name."""
