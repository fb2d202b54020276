"""chainrule.profiler from Python: the counts of a small program's primitives, the table and a
Chrome trace that parses, with torch.profiler's names."""
import json

import numpy as np
import pytest

import chainrule as cr
from chainrule import profiler


def small_program():
    rng = np.random.default_rng(0)
    x = cr.tensor(rng.standard_normal((8, 5)).astype(np.float32)).requires_grad_()
    w = cr.tensor(rng.standard_normal((5, 4)).astype(np.float32)).requires_grad_()
    b = cr.tensor(rng.standard_normal(4).astype(np.float32)).requires_grad_()
    cr.sum(cr.relu(cr.matmul(x, w) + b)).backward()


def test_profile_counts_table_and_trace(tmp_path):
    small_program()
    with profiler.profile() as prof:
        with profiler.record_function("region"):
            small_program()
    calls = {(r["name"], r["phase"]): r["calls"] for r in prof.key_averages()}
    expected = {(n, p): 1 for n in ("matmul", "add", "relu", "sum") for p in ("forward", "backward")}
    expected[("accumulate_grad", "backward")] = 3
    expected[("region", "user")] = 1
    assert calls == expected
    assert "outside any (framework overhead)" in prof.table()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    events = [e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X"]
    assert len(events) == len(prof.events())
    assert all(e["dur"] >= 0 and e["cat"] in ("forward", "backward", "user") for e in events)


def test_profile_outside_with_says_so():
    with pytest.raises(ValueError, match="not started"):
        profiler.profile().table()
