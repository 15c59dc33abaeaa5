"""Table VIII's GI across runs (``distill.gap_info``): the samples S0 gets wrong and any ResKD
student of any run gets right, pinned by hand on two fake runs that share T and S0."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from distill.gap_info import SampleOutputs, cross_run_gi

LABELS = torch.tensor([0, 0, 0, 0, 1])
T = torch.tensor([[3.0, 0.0]] * 4 + [[0.0, 3.0]])
# S0 is right on sample 0 only; ||S0 - T||: 2 on sample 0, sqrt(10) on 1-4 ((-3, 1) or (1, -3))
S0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])


def _bump(sample: int, by: list[float]) -> torch.Tensor:
    r = torch.zeros(5, 2)
    r[sample] = torch.tensor(by)
    return r


# run a: R1 fixes sample 1 (S1 there (2, 1), to T (-1, 1): sqrt(2))
S1A = S0 + _bump(1, [2.0, 0.0])
# run b: R1 fixes sample 4 ((1, 4), to T (1, 1)), R2 then sample 3 ((4, 1), to T (1, 1))
S1B = S0 + _bump(4, [0.0, 4.0])
S2B = S1B + _bump(3, [4.0, 0.0])


def _run(stages: list[torch.Tensor], archs: list[str], teacher: str = "T@1") -> SampleOutputs:
    return SampleOutputs.of(
        stages=stages, teacher_logits=T, labels=LABELS, archs=archs, teacher=teacher
    )


def _runs() -> dict[str, SampleOutputs]:
    return {
        "a": _run([S0, S1A], ["r20", "r20-r8"]),
        "b": _run([S0, S1B, S2B], ["r20", "r20-r14", "r20-r14-r8"]),
    }


def test_gi_over_the_samples_any_run_fixes(tmp_path: Path) -> None:
    for name, run in _runs().items():  # through the stored file, as the command reads them
        (tmp_path / name).mkdir()
        run.save(tmp_path / name)
    runs = {name: SampleOutputs.load(tmp_path / name) for name in ("a", "b")}
    table = cross_run_gi(runs)
    # S0 wrong on 1, 2, 3, 4; run a fixes 1, run b fixes 4 (S1) and 3 (S2); 2 stays wrong
    assert table.samples == 3
    # run b's S0 is run a's (same networks, same outputs): one row
    got = {(r.run, r.model): r for r in table.rows}
    assert list(got) == [("a", "S0"), ("a", "S1"), ("b", "S1"), ("b", "S2")]
    r10, r2 = math.sqrt(10), math.sqrt(2)
    # over samples 1, 3, 4: S0 sqrt(10) on each
    assert got["a", "S0"].gi_over_c1_to_T == pytest.approx(r10)
    # S1 of a: sqrt(2) on 1, sqrt(10) on 3 and 4
    assert got["a", "S1"].gi_over_c1_to_T == pytest.approx((r2 + 2 * r10) / 3)
    # S1 of b: sqrt(10) on 1 and 3, sqrt(2) on 4; S2 of b: sqrt(10) on 1, sqrt(2) on 3 and 4
    assert got["b", "S1"].gi_over_c1_to_T == pytest.approx((2 * r10 + r2) / 3)
    assert got["b", "S2"].gi_over_c1_to_T == pytest.approx((r10 + 2 * r2) / 3)
    # L2 to T over all five samples: S0 2 on sample 0, sqrt(10) on the four others
    assert got["a", "S0"].l2_to_T == pytest.approx((2 + 4 * r10) / 5)
    assert [r.accuracy for r in table.rows] == pytest.approx([0.2, 0.4, 0.4, 0.6])
    assert got["b", "S2"].arch == "r20-r14-r8"


def test_one_run_alone_reads_only_its_own_fixes() -> None:
    # run a alone fixes sample 1 only: S0 sqrt(10) there, its S1 sqrt(2)
    table = cross_run_gi({"a": _runs()["a"]})
    assert table.samples == 1
    assert [r.gi_over_c1_to_T for r in table.rows] == pytest.approx([math.sqrt(10), math.sqrt(2)])
    # with no res-student, no sample is in the subset: GI is not read
    assert cross_run_gi({"s0": _run([S0], ["r20"])}).rows[0].gi_over_c1_to_T is None


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (_run([S1A, S2B], ["r20", "r20-r8"]), "b: its S0 predicts otherwise than a's"),
        (_run([S0, S1B], ["r20", "r20-r14"], teacher="T@2"), "b: teacher T@2, a: T@1"),
    ],
)
def test_runs_that_do_not_share_t_and_s0_are_refused(other: SampleOutputs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cross_run_gi({"a": _runs()["a"], "b": other})
