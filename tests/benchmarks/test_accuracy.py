"""benchmarks/ops/accuracy.py: the long-sequence accuracy table of the Triton path (interpreter on CPU)."""

from __future__ import annotations

import pytest

from benchmarks.ops import accuracy


def test_table_has_every_tensor_of_each_op_within_fp32_rounding(tmp_path):
    out = tmp_path / "acc.md"
    accuracy.main(
        ["--ops", "chunk_simple_gla", "chunk_gated_delta_rule", "--T", "100", "--dtype", "float32",
         "--shape", "1,2,32,16", "--out", str(out)]
    )  # fmt: skip
    lines = out.read_text().splitlines()
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["op", "T", "o", "ht", "dq", "dk", "dv", "dg", "dinitial_state", "dbeta"]
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")[2:]] for r in lines[4:]}
    assert set(rows) == {"chunk_simple_gla", "chunk_gated_delta_rule"}
    assert rows["chunk_simple_gla"][-1] == "-", "simple GLA has no beta"
    for op, cells in rows.items():
        errors = [float(c) for c in cells if c != "-"]
        assert len(errors) == (7 if op == "chunk_simple_gla" else 8)
        assert all(0 < e < 1e-5 for e in errors), (op, errors)


def test_every_listed_op_has_a_reference_and_unknown_names_fail(capsys):
    assert set(accuracy.OPS) == set(accuracy._ops())
    with pytest.raises(SystemExit):
        accuracy.main(["--ops", "chunk_foo"])
    assert "invalid choice: 'chunk_foo'" in capsys.readouterr().err
