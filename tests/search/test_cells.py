"""Cells drawn as graphs and printed as text (DARTS's ``visualize.py``)."""

from __future__ import annotations

from pathlib import Path

from search.cells import draw_cells, genotype_text
from space.genotypes import DARTS_V1, Genotype


def test_text_names_every_node_its_operations_and_the_learnable_count() -> None:
    text = genotype_text(DARTS_V1)
    normal_learnable = sum(op.startswith(("sep", "dil")) for op, _ in DARTS_V1.normal)
    assert f"normal cell ({normal_learnable} of 8 operations learnable" in text
    assert "node 0 = sep_conv_3x3(c_{k-1}) + sep_conv_3x3(c_{k-2})" in text  # as DARTS lists it
    assert "reduce cell (0 of 8 operations learnable, 3 skip)" in text
    assert text.count("node ") == 8 and text.count("c_{k} = concat(0, 1, 2, 3)") == 2
    skips = Genotype.of([("skip_connect", 0), ("skip_connect", 1)] * 4, list(DARTS_V1.reduce))
    assert "normal cell (0 of 8 operations learnable, 8 skip)" in genotype_text(skips)


def test_cells_are_drawn_to_a_png(tmp_path: Path) -> None:
    path = draw_cells(DARTS_V1, tmp_path / "cells.png", title="DARTS_V1")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
