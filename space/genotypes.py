"""Genotypes in DARTS's format: for each cell type, two ``(operation, input)`` pairs per
intermediate node (inputs 0 and 1 are the two previous cells, 2.. the cell's own nodes) and the
nodes concatenated into the output. Immutable values with a JSON round trip."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from space.operations import PRIMITIVES

Edge = tuple[str, int]


class Genotype(NamedTuple):
    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    @classmethod
    def of(
        cls,
        normal: list[Edge] | tuple[Edge, ...],
        reduce: list[Edge] | tuple[Edge, ...],
        *,
        normal_concat: tuple[int, ...] | range | None = None,
        reduce_concat: tuple[int, ...] | range | None = None,
    ) -> Genotype:
        """A checked genotype (two inputs per node, known operations, inputs from earlier nodes);
        the concat defaults to every intermediate node."""
        genotype = cls(
            tuple((str(op), int(i)) for op, i in normal),
            tuple(normal_concat or range(2, 2 + len(normal) // 2)),
            tuple((str(op), int(i)) for op, i in reduce),
            tuple(reduce_concat or range(2, 2 + len(reduce) // 2)),
        )
        genotype.check()
        return genotype

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def check(self) -> None:
        for kind in ("normal", "reduce"):
            edges: tuple[Edge, ...] = getattr(self, kind)
            concat: tuple[int, ...] = getattr(self, f"{kind}_concat")
            if not edges or len(edges) % 2:
                raise ValueError(f"genotype.{kind}: two (operation, input) pairs per node")
            if len(edges) != len(self.normal):
                raise ValueError("genotype: normal and reduce cells need the same node count")
            for k, (op, inp) in enumerate(edges):
                if op not in PRIMITIVES or op == "none":
                    allowed = ", ".join(p for p in PRIMITIVES if p != "none")
                    raise ValueError(f"genotype.{kind}[{k}]: operation {op!r}; allowed: {allowed}")
                if not 0 <= inp < 2 + k // 2:
                    raise ValueError(
                        f"genotype.{kind}[{k}]: input {inp} must be < {2 + k // 2} (the two "
                        "previous cells and this cell's earlier nodes)"
                    )
            if not concat or any(not 2 <= c < 2 + len(edges) // 2 for c in concat):
                last = 1 + len(edges) // 2
                raise ValueError(f"genotype.{kind}_concat: node indices in 2..{last}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "normal": [list(e) for e in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(e) for e in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: Any) -> Genotype:
        if not isinstance(raw, dict) or not {"normal", "reduce"} <= set(raw):
            raise ValueError("genotype: a mapping with normal, reduce (and their _concat)")
        return cls.of(
            [tuple(e) for e in raw["normal"]],
            [tuple(e) for e in raw["reduce"]],
            normal_concat=tuple(raw.get("normal_concat", ())) or None,
            reduce_concat=tuple(raw.get("reduce_concat", ())) or None,
        )

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        return cls.from_dict(json.loads(text))

    def describe(self) -> str:
        """A one-line summary for progress bars and logs."""

        def cell(edges: tuple[Edge, ...]) -> str:
            return " ".join(f"{op}<{i}" for op, i in edges)

        return f"normal[{cell(self.normal)}] reduce[{cell(self.reduce)}]"

    def short(self) -> str:
        """A compact form for progress bars: ``N s3.0 s3.1|... R mp.0 ...`` (operation.input)."""

        def cell(edges: tuple[Edge, ...]) -> str:
            pairs = [f"{SHORT[op]}.{i}" for op, i in edges]
            return "|".join(" ".join(pairs[k : k + 2]) for k in range(0, len(pairs), 2))

        return f"N {cell(self.normal)} R {cell(self.reduce)}"


SHORT = {
    "max_pool_3x3": "mp",
    "avg_pool_3x3": "ap",
    "skip_connect": "id",
    "sep_conv_3x3": "s3",
    "sep_conv_5x5": "s5",
    "dil_conv_3x3": "d3",
    "dil_conv_5x5": "d5",
}


# The published genotypes (Liu et al., DARTS, ``cnn/genotypes.py``).
DARTS_V1 = Genotype.of(
    [
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 2),
    ],
    [
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("avg_pool_3x3", 0),
    ],
)
DARTS_V2 = Genotype.of(
    [
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ],
    [
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ],
)
# StacNAS's ImageNet cells (Li et al. 2019, searched on ImageNet itself), transcribed from the
# cell figures its repository publishes (susan0199/StacNAS, ``images/imagenet_normal.png`` and
# ``imagenet_reduce.png``; the genotype is not given as text there or in either paper). Every node
# takes one edge from each previous cell: in the normal cell node 0 adds the two previous cells
# (identities) and nodes 1-3 sum a 3x3 separable conv of each; in the reduction cell all eight
# edges are 3x3 separable convs. At 48 channels and 14 cells for 1000 classes: 5.72 M parameters
# (StacNAS's table: 5.7 M) and 635 MFLOPs, ResKD's R1 in Table VII (17.40 - 11.69 = 5.71 M,
# 2454 - 1821 = 633 MFLOPs).
STACNAS_IMAGENET = Genotype.of(
    [
        ("skip_connect", 0),
        ("skip_connect", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
    ],
    [("sep_conv_3x3", i) for _ in range(4) for i in (0, 1)],
)
GENOTYPES: dict[str, Genotype] = {
    "darts_v1": DARTS_V1,
    "darts_v2": DARTS_V2,
    "stacnas_imagenet": STACNAS_IMAGENET,
}
SOURCES: dict[str, str] = {  # who published each genotype
    "darts_v1": "Liu et al.",
    "darts_v2": "Liu et al.",
    "stacnas_imagenet": "Li et al., StacNAS",
}
