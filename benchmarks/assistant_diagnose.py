"""Why does (or doesn't) the assistant win? Reads a finished ``benchmarks.assistant_seeds`` run and
measures, on the test set, the distance of the final feature map to the teacher's (eq. 3's
quantity, through each model's own 1x1 adapter) for S alone, S + A and the unseparated baseline.

    python -m benchmarks.assistant_diagnose runs/bench-assistant/mnist5k-seed0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import announce, stored_weights
from distill.assistant import AssistedStudent, feature_distance, match_resolution, teacher_adapters
from distill.data import load_dataset
from distill.models import NetSpec
from distill.train import loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    announce()
    config = json.loads((args.run / "config.json").read_text())
    data = load_dataset(config["dataset"], augment=False)
    info = data.info

    def weights(kind: str) -> dict[str, Any]:
        return torch.load(stored_weights(args.run, kind), map_location="cpu", weights_only=True)

    teacher = NetSpec.for_dataset(config["teacher"]["model"], info).build_backbone()
    teacher.load_state_dict(weights("teacher")["model"])
    report = json.loads((args.run / "report.json").read_text())
    sep = report["separation"]
    payload = torch.load(args.run / "assisted_student.pt", weights_only=True)
    assisted = AssistedStudent(
        NetSpec(**payload["student"]).build_backbone(),
        NetSpec(**payload["assistant"]).build_backbone(),
        variant=payload["variant"],
    )
    state = weights("assistant-assistant")
    assisted.load_state_dict(state["model"])
    adapters = teacher_adapters(teacher, assisted.student)
    adapters.load_state_dict(state["adapters"])
    original = NetSpec.for_dataset(config["student"]["model"], info)
    baseline = AssistedStudent(original.build_backbone(), None)
    b_state = weights("feature_kd-student")
    baseline.load_state_dict(b_state["model"])
    b_adapters = teacher_adapters(teacher, baseline.student)
    b_adapters.load_state_dict(b_state["adapters"])

    last = assisted.student.stage_names[-1]
    totals = {"S alone": 0.0, "S + A": 0.0, "feature KD (unseparated)": 0.0}
    n = 0
    for m in (teacher, assisted, baseline):
        m.eval()
    with torch.no_grad():
        for x, _ in loader(data.test, batch_size=256):
            t = teacher.forward_features(x)
            levels = assisted.forward_levels(x)
            s = levels.student[-1]
            totals["S alone"] += feature_distance(
                adapters[last](s), match_resolution(t, s)
            ).item() * len(x)
            totals["S + A"] += feature_distance(adapters[last](levels.features), t).item() * len(x)
            f = baseline.forward_features(x)
            totals["feature KD (unseparated)"] += feature_distance(
                b_adapters[last](f), t
            ).item() * len(x)
            n += len(x)
    print(f"{args.run}: separation {sep['student']} + {sep['assistant']}")
    accuracy = {r["model"]: r["accuracy"] for r in report["rows"]}
    for name, total in totals.items():
        print(f"  {name:26} final-map distance to T {total / n:.4f}")
    print("  accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()))


if __name__ == "__main__":
    main()
