"""One number convention in everything the client and ``reskd`` print: accuracy in percent with
two decimals, MFLOPs to 3 significant digits (never in exponent notation), Energy to 4, counts as
``24.6k`` and durations in words (the dashboard's ``app.js`` writes the same)."""

from __future__ import annotations

from space.numbers import (
    cost_text,
    count,
    duration,
    energy,
    field_text,
    mflops,
    percent,
    significant,
)


def test_numbers_read_one_way() -> None:
    assert [percent(x) for x in (0.97254, 1, 0.9, None)] == ["97.25%", "100.00%", "90.00%", "-"]
    assert [mflops(x) for x in (0.24234, 2.5561, 40.84, 9.996, 125.4, 1234.5, 0.2, 0)] == [
        "0.242", "2.56", "40.8", "10.0", "125", "1230", "0.200", "0",
    ]  # fmt: skip
    assert [energy(x) for x in (0.97123, 0.9701, 1.0)] == ["0.9712", "0.9701", "1.000"]
    assert [count(x) for x in (812, 24600, 269722, 1234567)] == ["812", "24.6k", "270k", "1.23M"]
    assert [duration(s) for s in (0.4, 42, 216, 240, 3600, 3900, 3725)] == [
        "0 s", "42 s", "3 min 36 s", "4 min", "1 h", "1 h 5 min", "1 h 2 min",
    ]  # fmt: skip
    assert significant(12345.6, 3) == "12300" and significant(-0.012345, 2) == "-0.012"
    assert cost_text("params", 24600) == "24.6k" and cost_text("adaptive_mflops", 8.3333) == "8.33"


def test_a_field_reads_by_its_name() -> None:
    shown = {
        k: field_text(k, v)
        for k, v in {
            "val_accuracy": 0.955612, "mflops": 15.0, "pct_of_T": 8.3333, "energy": 0.98765,
            "eta_seconds": 216.0, "t": 4.0, "res_students": 2, "arch": "resnet8", "loss": None,
        }.items()
    }  # fmt: skip
    assert shown == {
        "val_accuracy": "95.56%", "mflops": "15.0", "pct_of_T": "8.33", "energy": "0.9877",
        "eta_seconds": "3 min 36 s", "t": "4.000", "res_students": 2, "arch": "resnet8",
        "loss": "-",
    }  # fmt: skip
