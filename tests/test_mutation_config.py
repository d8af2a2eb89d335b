"""The nightly ``mutation`` session's configuration is consistent (the tool is not run here).

pyproject.toml ``[tool.mutmut]`` names what is mutated and how the suite judges each mutant;
tools/mutation.py samples, budgets and scores; noxfile.py runs it, never in CI.
"""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _mutmut_config() -> dict[str, object]:
    config: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"][
        "mutmut"
    ]
    return config


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_mutation_tool", ROOT / "tools/mutation.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_mutated_paths_exist_and_match_the_tool() -> None:
    config = _mutmut_config()
    only = list(config["only_mutate"])  # type: ignore[call-overload]
    assert only == [f"{package}/*" for package in _tool().MUTATED]
    for pattern in only:
        assert list(ROOT.glob(pattern.replace("*", "*.py"))), pattern
    for path in [*config["source_paths"], *config["also_copy"]]:  # type: ignore[misc]
        assert (ROOT / path).is_dir(), path
    for module in ("filesystem/_writer.py", "filesystem/_reader.py", "transfer/_read.py"):
        assert any((ROOT / "dcp_impl" / module).match(p.replace("*", "*.py")) for p in only)
    assert (ROOT / "dcp_impl/metadata/_decode.py").is_file()


def test_each_mutant_is_judged_by_the_suite_on_dcp_impl_fs() -> None:
    from spec_tests.backends import builtin
    from spec_tests.plugin.profiles import PROFILES

    args = list(_mutmut_config()["pytest_add_cli_args"])  # type: ignore[call-overload]
    backend = next(a.split("=", 1)[1] for a in args if a.startswith("--dcp-backend="))
    assert builtin(backend).name == "dcp_impl-fs"
    profile = next(a.split("=", 1)[1] for a in args if a.startswith("--hypothesis-profile="))
    assert profile == "dcp-mutation"
    assert profile in PROFILES
    selection = list(_mutmut_config()["pytest_add_cli_args_test_selection"])  # type: ignore[call-overload]
    assert selection == ["spec_tests/"]


def test_the_mutation_profile_is_the_selftests_without_the_executor_check() -> None:
    from hypothesis import HealthCheck, settings

    from spec_tests.plugin.profiles import register_profiles

    previous = register_profiles(load_default=False)
    try:
        mutation, selftest = (
            settings.get_profile("dcp-mutation"),
            settings.get_profile("dcp-selftest"),
        )
        assert mutation.max_examples == selftest.max_examples
        assert mutation.derandomize
        assert mutation.database is None
        assert mutation.phases == selftest.phases
        assert HealthCheck.differing_executors in mutation.suppress_health_check
    finally:
        settings.load_profile(previous)


def test_the_session_is_nightly_only_and_pins_the_tool() -> None:
    tree = ast.parse((ROOT / "noxfile.py").read_text("utf-8"))
    sessions = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert "mutation" in sessions
    defaults = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "nox.options.sessions"
    )
    assert "mutation" not in ast.literal_eval(defaults)
    assert "mutation" not in (ROOT / ".ci/run").read_text("utf-8")
    pins = (ROOT / "constraints/mutation.txt").read_text("utf-8").splitlines()
    assert any(line.startswith("mutmut==3.") for line in pins)


def test_the_score_and_its_interval() -> None:
    tool = _tool()
    codes = {
        "dcp_impl.transfer._read.x_a__mutmut_1": 1,
        "dcp_impl.transfer._read.x_a__mutmut_2": 0,
        "dcp_impl.transfer._read.x_a__mutmut_3": -1,
        "dcp_impl.transfer._read.x_a__mutmut_4": None,
        "dcp_impl.metadata._decode.x_b__mutmut_1": 0,
    }
    table = tool.score_table(codes, ["dcp_impl.metadata._decode.x_b__mutmut_1"])
    assert "| dcp_impl.transfer._read | 2 (1) | 1 | 0 | 1 | 67% " in table
    assert "| dcp_impl.metadata._decode | 0 (0) | 0 | 1 | 0 | - |" in table
    low, high = tool.wilson(90, 100)
    assert low < 0.9 < high
    assert tool.wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("name", ["dcp_impl.transfer._read.xǁReaderǁread__mutmut_12"])
def test_mutants_are_grouped_by_module(name: str) -> None:
    assert _tool().module_of(name) == "dcp_impl.transfer._read"
