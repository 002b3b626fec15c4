"""The CLI on every shared dataset (``fmscope info``, ``segment --method otsu``, ``evaluate``), one image each.

Floors are the measured Otsu Dice of these first images minus a margin (full numbers: benchmarks/real_data_otsu.py
and the README). They guard the whole read -> segment -> write -> read -> evaluate chain on real files.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "real_data_otsu", Path(__file__).resolve().parents[1] / "benchmarks" / "real_data_otsu.py"
)
assert _SPEC is not None and _SPEC.loader is not None
real_data_otsu = importlib.util.module_from_spec(_SPEC)
sys.modules["real_data_otsu"] = real_data_otsu
_SPEC.loader.exec_module(real_data_otsu)

FLOORS = {
    "isbi2012 membranes": 0.5,
    "isbi2012 mitochondria": 0.1,
    "vesselnn vessels": 0.4,
    "dsb2018 nuclei": 0.6,
    "tio2 particles": 0.75,
    "lsm cell_nucleus": 0.3,
    "lsm vessels": 0.15,
}


def test_otsu_on_every_shared_dataset(shared_data: Path) -> None:
    outcomes = {o.dataset: o for o in real_data_otsu.run(shared_data, limit=1, verbose=False)}
    for name, floor in FLOORS.items():
        assert name in outcomes, f"{name} missing from {sorted(outcomes)}"
        assert min(outcomes[name].dice) > floor, (name, outcomes[name].dice)
    assert outcomes["lsm pretrain (unlabelled)"].info["shape"] == [96, 96, 96]
    assert outcomes["dsb2018 nuclei"].info["axes"] == "CYX"
    # the DSB nuclei are well separated: matched instance F1 is meaningful there
    assert outcomes["dsb2018 nuclei"].f1_50[0] > 0.3
