"""Unit tests of perf/'s report and compare tool and of its workload definitions (no timing)."""

from __future__ import annotations

import argparse
import gc
import json
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from _perf import perf_module
from hypothesis import given, settings
from hypothesis import strategies as st

from dcp_impl.layout import first_overlap, holes
from spec_tests.sim.harness import region

_ROOT = Path(__file__).resolve().parents[1]


report = perf_module("report")
workloads = perf_module("workloads")

GB = 10**9


def _bench(
    key: str, kind: str, median: float, *, op: str = "load", workload: str = "w"
) -> dict[str, Any]:
    subject = key.split("[")[-1].rstrip("]")
    info = {
        "op": op,
        "workload": workload,
        "subject": subject,
        "kind": kind,
        "nbytes": GB,
        "device": "cpu",
    }
    if op == "read_metadata":
        info["nbytes"] = 0
    return {"fullname": key, "name": key, "extra_info": info, "stats": {"median": median}}


def _relabel(bench: dict[str, Any], **labels: object) -> dict[str, Any]:
    return {**bench, "extra_info": {**bench["extra_info"], **labels}}


def _run(tmp_path: Path, name: str, benches: list[dict[str, Any]]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"benchmarks": benches}))
    return path


def _standard(scale: float = 1.0, backend_seconds: float = 0.5) -> list[dict[str, Any]]:
    """One workload: a backend, two baselines, the limit, and a metadata benchmark."""
    return [
        _bench("t::test_load[mine]", "backend", backend_seconds * scale),  # 2 GB/s
        _bench("t::test_load_baseline[slow]", "baseline", 1.0 * scale),  # 1 GB/s
        _bench("t::test_load_baseline[fast]", "baseline", 0.625 * scale),  # 1.6 GB/s
        _bench("t::test_memcpy_limit[memcpy]", "limit", 0.25 * scale, op="copy"),  # 4 GB/s
        _bench("t::test_read_metadata[mine]", "backend", 0.01 * scale, op="read_metadata"),
    ]


def _by_subject(scored: list[Any]) -> dict[tuple[str, str], Any]:
    return {(s.row.op, s.row.subject): s for s in scored}


def test_score_uses_best_baseline_and_limit_of_the_same_workload(tmp_path: Path) -> None:
    benches = [*_standard(), _bench("t::test_load_baseline[other]", "baseline", 0.1, workload="v")]
    scored = _by_subject(report.score(report.load_rows(_run(tmp_path, "run", benches))))
    mine = scored["load", "mine"]
    assert mine.vs_baseline == pytest.approx(2.0 / 1.6)  # "other" is another workload's baseline
    assert mine.vs_limit == pytest.approx(0.5)
    assert mine.ratio == mine.vs_baseline
    assert scored["load", "fast"].ratio == pytest.approx(0.4)  # a baseline is held to the limit
    assert scored["copy", "memcpy"].ratio is None
    metadata = scored["read_metadata", "mine"]
    assert metadata.row.gbps is None
    assert metadata.ratio is None


def test_load_rows_skips_unlabelled_benchmarks(tmp_path: Path) -> None:
    foreign = {"fullname": "x::test_other", "extra_info": {}, "stats": {"median": 1.0}}
    rows = report.load_rows(_run(tmp_path, "run", [*_standard(), foreign]))
    assert {r.key for r in rows} == {b["fullname"] for b in _standard()}


@pytest.mark.parametrize(
    ("benches", "message"),
    [
        ([], "benchmark-disable"),
        ([{**_bench("t::a[x]", "backend", 1.0), "stats": {}}], "stats.median"),
        ([_bench("t::a[x]", "fastest", 1.0)], "kind"),
        ([_bench("t::a[x]", "backend", 0.0)], "positive median"),
        ([_relabel(_bench("t::a[x]", "backend", 1.0), nbytes="many")], "nbytes"),
    ],
)
def test_load_rows_rejects_what_it_cannot_use(
    tmp_path: Path, benches: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(report.ReportError, match=message):
        report.load_rows(_run(tmp_path, "run", benches))


def test_load_rows_rejects_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text("not json")
    with pytest.raises(report.ReportError, match="pytest-benchmark JSON"):
        report.load_rows(path)


def _changes(
    tmp_path: Path, before: list[Any], now: list[Any], threshold: float = 0.1
) -> dict[str, Any]:
    old = report.score(report.load_rows(_run(tmp_path, "before", before)))
    new = report.score(report.load_rows(_run(tmp_path, "now", now)))
    return {c.key: c for c in report.compare(old, new, threshold)}


def test_compare_fails_a_ratio_that_fell_beyond_the_threshold(tmp_path: Path) -> None:
    # 2 GB/s -> 1.6 GB/s beside an unchanged baseline: the ratio fell by 20%.
    change = _changes(tmp_path, _standard(), _standard(backend_seconds=0.625))["t::test_load[mine]"]
    assert change.gated_on_ratio
    assert change.ratio_regressed
    assert change.failed
    assert change.ratio_now == pytest.approx(0.8 * change.ratio_before)


def test_compare_passes_a_ratio_within_the_threshold(tmp_path: Path) -> None:
    change = _changes(tmp_path, _standard(), _standard(backend_seconds=0.52))["t::test_load[mine]"]
    assert not change.failed
    assert not change.ratio_regressed


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(min_value=0.1, max_value=10.0))
def test_a_uniformly_slower_machine_fails_only_rows_without_a_ratio(scale: float) -> None:
    old = report.score(report.rows_from({"benchmarks": _standard()}, "before"))
    new = report.score(report.rows_from({"benchmarks": _standard(scale)}, "now"))
    changes = {c.key: c for c in report.compare(old, new, 0.1)}
    assert not changes["t::test_load[mine]"].failed  # the ratio to the baseline is unchanged
    assert not changes["t::test_load_baseline[fast]"].failed  # references never fail
    assert changes["t::test_read_metadata[mine]"].failed == (scale > 1.1)  # raw median only


def test_compare_ignores_references_and_lists_missing_and_new(tmp_path: Path) -> None:
    before = [*_standard(), _bench("t::test_load[gone]", "backend", 1.0)]
    now = [*_standard(scale=2.0), _bench("t::test_load[added]", "backend", 1.0)]
    changes = _changes(tmp_path, before, now)
    assert changes["t::test_load_baseline[slow]"].raw_regressed
    assert not changes["t::test_load_baseline[slow]"].failed
    text = report.format_comparison(
        list(changes.values()), {b["fullname"] for b in before}, {b["fullname"] for b in now}
    )
    assert "only in the baseline (not run now):\n  t::test_load[gone]" in text
    assert "new (not in the baseline):\n  t::test_load[added]" in text
    assert "REGRESSED (raw median)" in text  # the metadata row, slower by 2x


def test_format_table_shows_each_row_with_its_ratios(tmp_path: Path) -> None:
    table = report.format_table(report.score(report.load_rows(_run(tmp_path, "run", _standard()))))
    line = next(line for line in table.splitlines() if " mine " in line and "load " in line)
    assert line.split()[-4:] == ["500.00", "2.00", "1.25", "0.50"]


def _variants(backend: float, noverify: float, torch_hf: float, memcpy: float) -> list[Any]:
    """One load workload: a backend, its unverified variant, torch-hf and the limit (seconds)."""
    return [
        _bench("t::test_load[mine]", "backend", backend),
        _bench("t::test_load[mine-noverify]", "backend", noverify),
        _bench("t::test_load[torch-hf]", "backend", torch_hf),
        _bench("t::test_memcpy_limit[memcpy]", "limit", memcpy, op="copy"),
    ]


def test_versus_adds_a_ratio_to_another_subject_of_the_same_run() -> None:
    rows = report.rows_from({"benchmarks": _variants(0.5, 0.4, 1.0, 0.25)}, "run")
    scored = _by_subject(report.score(rows, ["torch-hf", "{subject}-noverify", "absent"]))
    assert scored["load", "mine"].versus == pytest.approx((2.0, 0.8, None))
    torch_hf, own, absent = scored["load", "torch-hf"].versus
    assert torch_hf is None  # a row is not its own reference
    assert own is None  # no torch-hf-noverify in the run
    assert absent is None
    table = report.format_table(list(scored.values()), ["torch-hf", "{subject}-noverify"])
    assert table.splitlines()[0].split()[-4:] == ["x", "torch-hf", "x", "{subject}-noverify"]
    line = next(line for line in table.splitlines() if " mine " in line)
    assert line.split()[-2:] == ["2.00", "0.80"]


def test_runs_combine_as_medians_of_their_own_ratios() -> None:
    # The machine is fast, slow, then fast again; the backend's ratio to the limit is taken
    # within each run (0.5, 0.25, 0.4) and its median is 0.4, not a ratio across runs.
    runs = [
        report.score(report.rows_from({"benchmarks": _variants(*seconds)}, "run"), ["torch-hf"])
        for seconds in ((0.5, 0.4, 1.0, 0.25), (4.0, 3.0, 5.0, 1.0), (0.625, 0.5, 1.0, 0.25))
    ]
    mine = _by_subject(report.median_of_runs(runs))["load", "mine"]
    assert mine.row.median == pytest.approx(0.625)
    assert mine.vs_limit == pytest.approx(0.4)
    assert mine.versus == pytest.approx((1.6,))  # 2.0, 1.25, 1.6
    extra = [*_variants(0.5, 0.4, 1.0, 0.25), _bench("t::test_load[extra]", "backend", 2.0)]
    once = report.score(report.rows_from({"benchmarks": extra}, "run"), ["torch-hf"])
    combined = _by_subject(report.median_of_runs([once, runs[1]]))
    assert combined["load", "extra"].row.median == 2.0  # in one run only: that run's figure
    assert len(combined) == 5


def test_report_takes_several_runs_and_gates_on_their_medians(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [
        str(_run(tmp_path, f"run{n}", _variants(*seconds)))
        for n, seconds in enumerate(
            ((0.5, 0.4, 1.0, 0.25), (4.0, 3.0, 5.0, 1.0), (0.5, 0.4, 1.0, 0.25))
        )
    ]
    args = [*runs, "--versus", "{subject}-noverify", "--no-chart"]
    assert report.main(args) == 0
    out = capsys.readouterr().out
    assert "(medians of 3 runs)" in out
    assert next(line for line in out.splitlines() if " mine " in line).split()[-1] == "0.80"
    slower = str(_run(tmp_path, "slower", _variants(1.0, 0.4, 1.0, 0.25)))
    assert report.main([slower, "--compare", *runs, "--no-chart"]) == 1
    assert "REGRESSED" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "value"), [("10%", 0.1), ("0.25", 0.25), (" 5 % ", 0.05)])
def test_parse_threshold(text: str, value: float) -> None:
    assert report.parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["0", "100%", "1.5", "ten", ""])
def test_parse_threshold_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="threshold"):
        report.parse_threshold(text)


def test_main_exit_status_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    before = _run(tmp_path, "before", _standard())
    now = _run(tmp_path, "now", _standard(backend_seconds=0.625))
    assert report.main([str(now), "--compare", str(before), "--threshold", "25%"]) == 0
    assert (tmp_path / "now.png").read_bytes().startswith(b"\x89PNG")
    assert report.main([str(now), "--compare", str(before), "--no-chart"]) == 1
    assert "REGRESSED" in capsys.readouterr().out
    assert report.main([str(tmp_path / "missing.json"), "--no-chart"]) == 2


# --- workloads -------------------------------------------------------------------------------


def test_parse_size() -> None:
    assert workloads.parse_size("tiny") == 4 << 20
    assert workloads.parse_size("64MiB") == 64 << 20
    assert workloads.parse_size("1GiB") == workloads.parse_size("default") == 1 << 30
    assert workloads.parse_size("4096") == 4096
    for bad in ("0", "huge", "1TB", "-1MiB"):
        with pytest.raises(ValueError, match="--perf-size"):
            workloads.parse_size(bad)


def test_default_sizes_are_what_the_docs_say() -> None:
    gib = workloads.parse_size("default")
    bf16 = workloads.WORKLOADS["bf16x64"].tensors(gib)
    assert len(bf16) == 64
    assert {s.dtype for s in bf16} == {torch.bfloat16}
    assert sum(s.nbytes for s in bf16) == gib
    transformer = workloads.WORKLOADS["transformer"].tensors(gib)
    assert abs(sum(s.nbytes for s in transformer) / gib - 1) < 0.05
    assert {s.dtype for s in transformer} == {torch.bfloat16, torch.float32}
    assert sum(s.nbytes for s in workloads.WORKLOADS["transformer"].tensors(4 << 20)) < 8 << 20


def test_make_tensors_is_deterministic() -> None:
    specs = workloads.WORKLOADS["transformer"].tensors(1 << 20)[:5]
    first, second = workloads.make_tensors(specs), workloads.make_tensors(specs)
    assert all(torch.equal(first[k].view(-1), second[k].view(-1)) for k in first)


@pytest.mark.parametrize("name", workloads.SHARDED + workloads.RESHARD)
@pytest.mark.parametrize("save", [True, False])
def test_split_covers_every_tensor(name: str, save: bool) -> None:
    """Saved pieces tile each tensor once; loaded ones cover it (0-dim ones on every rank)."""
    workload = workloads.WORKLOADS[name]
    tensors = workloads.make_tensors(workload.tensors(1 << 20))
    layout = workload.save if save else workload.load
    ranks = workloads.split(tensors, layout, save=save)
    assert len(ranks) == layout.ranks
    for fqn, tensor in tensors.items():
        boxes = [p.box for pieces in ranks for p in pieces if p.fqn == fqn]
        assert holes(tensor.shape, boxes) == []
        if save or tensor.dim():
            assert first_overlap(boxes) is None
        for pieces in ranks:
            for piece in (p for p in pieces if p.fqn == fqn):
                assert piece.tensor.is_contiguous()
                assert torch.equal(piece.tensor, region(tensor, piece.box))


def test_bytes_check_measures_both_readers(capsys: pytest.CaptureFixture[str]) -> None:
    bytes_check = perf_module("bytes_check")
    entries = bytes_check.small_entries(12)
    assert len(entries) == 13
    assert isinstance(entries["weight"], torch.Tensor)
    times = bytes_check.measure("fs", 12, rounds=2)
    assert sorted(times) == ["checked", "trusted"]
    assert all(len(runs) == 2 for runs in times.values())
    assert sorted(bytes_check.measure_check(12, rounds=1)) == ["check", "planner unpickle"]
    assert bytes_check.main(["--entries", "6", "--rounds", "1", "--backend", "hf"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("hf: 6 bytes entries, median of 1 interleaved loads")
    assert lines[1].startswith("check alone: 6 entries' bytes, median of 1")


@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("replicated", ["--procs", "2", "--size", "4MiB", "--rounds", "1"]),
        ("multiprocess", ["--procs", "1", "--size", "4MiB", "--rounds", "1"]),
    ],
)
def test_a_scaling_script_removes_the_checkpoint_it_made(
    script: str, argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``--root`` each script saves into a temp folder of its own: 129 MiB a run were
    left behind before."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    # Their ranks are spawned processes that import perf by name, as `python -m perf.NAME`
    # run from the checkout finds it.
    monkeypatch.syspath_prepend(str(_ROOT))
    perf_module(script).main(argv)
    assert list(tmp_path.iterdir()) == []


class _Benchmark:
    """pytest-benchmark's fixture as far as ``perf.bench.measure`` uses it: ``pedantic``
    calls ``setup``, the target and ``teardown`` (with the setup's arguments) each round."""

    disabled = False
    stats = None

    def __init__(self) -> None:
        self.extra_info: dict[str, Any] = {}
        self.group = ""

    def pedantic(self, target: Any, *, setup: Any, teardown: Any, rounds: int, **_: Any) -> Any:
        for _ in range(rounds + 1):  # the warm-up round too
            args, kwargs = setup()
            result = target(*args, **kwargs)
            teardown(*args, **kwargs)
        return result


def test_a_round_starts_collected_with_the_heap_frozen() -> None:
    """Garbage made before a round is gone when it starts, the heap stays frozen while it
    runs (its collections walk only what it makes), and thawed after it."""
    bench = perf_module("bench")
    seen: list[tuple[bool, int]] = []
    torn: list[int] = []

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        garbage = Cycle()
        ref = weakref.ref(garbage)
        del garbage
        return (ref,), {}

    def target(ref: weakref.ref[Cycle]) -> int:
        seen.append((ref() is None, gc.get_freeze_count()))
        return len(seen)

    def teardown(ref: weakref.ref[Cycle]) -> None:
        torn.append(gc.get_freeze_count())

    case = bench.Case("load", "w", "s", "backend", 1)
    assert bench.measure(_Benchmark(), case, target, setup, rounds=2, teardown=teardown) == 3
    assert [collected for collected, _ in seen] == [True] * 3
    assert all(frozen > 0 for _, frozen in seen)
    assert torn == [0, 0, 0]
    assert gc.get_freeze_count() == 0
