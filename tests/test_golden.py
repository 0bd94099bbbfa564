"""Golden cases: the exact patch, config and review for real configs.

Every case is checked four ways: the stored files match a fresh plan; the stored
patch applies with jsonpatch and gives the stored config; that config passes the
OCI schema; and planning it again yields [] (idempotent).  test_determinism.py renders
them all again in an interpreter with another hash seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonpatch
import pytest

from tests.harness.paths import GOLDEN
from tests.harness.skips import skip_or_fail
from transformer import golden
from transformer.config import parse_config
from transformer.plan import plan
from transformer.policy import load_policy
from transformer.rootfs import DescribedRootfs, EmptyRootfs
from transformer.schema import DEFAULT_SCHEMA_DIR, load_validator, validate

CASES = golden.discover(GOLDEN)
# Cases whose plan is refused keep the one-line error instead of a patch.
REFUSED = [c for c in CASES if (c / golden.ERRORS).is_file()]
PLANNED = [c for c in CASES if c not in REFUSED]
POLICY = load_policy()


def test_cases_exist():
    # Finding no cases must fail, not pass vacuously.
    assert len(PLANNED) >= 15, f"only {len(PLANNED)} golden cases under {GOLDEN}"
    assert len(REFUSED) >= 2, f"only {len(REFUSED)} refused golden cases under {GOLDEN}"


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_refused_case_is_bad_input_in_one_line(case: Path):
    from transformer.errors import EXIT_BAD_INPUT, OciSystemdError

    config, rootfs, options = _inputs(case)
    with pytest.raises(OciSystemdError) as refused:
        plan(config, rootfs, options)
    assert refused.value.exit_code == EXIT_BAD_INPUT
    assert "\n" not in refused.value.one_line()
    assert not any((case / name).exists() for name in golden.EXPECTED)


def _deepdiff_summary(mismatch: golden.Mismatch) -> str:
    if not mismatch.file.endswith(".json") or mismatch.expected is None:
        return ""
    from deepdiff import DeepDiff

    try:
        return DeepDiff(json.loads(mismatch.expected), json.loads(mismatch.actual)).pretty()
    except ValueError:
        return ""


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_matches(case: Path, request):
    if request.config.getoption("--update-golden"):
        changed = golden.update(case, POLICY)
        pytest.skip(f"updated {case.name}: {', '.join(changed) or 'no change'}")
    mismatches = golden.check(case, POLICY)
    report = "\n".join(m.unified_diff() + _deepdiff_summary(m) for m in mismatches)
    assert not mismatches, f"golden case {case.name} differs (run `make golden` if intended):\n{report}"


def _inputs(case: Path):
    config = parse_config((case / "config.json").read_bytes(), str(case / "config.json"))
    rootfs_file = case / "rootfs.json"
    rootfs = DescribedRootfs(json.loads(rootfs_file.read_text())) if rootfs_file.is_file() else EmptyRootfs()
    return config, rootfs, golden.case_options(case, POLICY)


@pytest.mark.parametrize("case", PLANNED, ids=[c.name for c in PLANNED])
def test_golden_patch_applies_and_is_idempotent(case: Path):
    config, rootfs, options = _inputs(case)
    patch = json.loads((case / "expected.patch.json").read_text())
    expected = json.loads((case / "expected.config.json").read_text())
    assert jsonpatch.apply_patch(config, patch) == expected
    again = plan(expected, rootfs, options)
    assert again.patch() == [], f"re-planning {case.name} is not a no-op: {again.patch()}"


@pytest.mark.parametrize("case", PLANNED, ids=[c.name for c in PLANNED])
def test_golden_result_is_schema_valid(case: Path):
    if not (DEFAULT_SCHEMA_DIR / "config-schema.json").is_file():
        skip_or_fail("OCI schema not installed (golang-github-opencontainers-specs-dev)")
    expected = json.loads((case / "expected.config.json").read_text())
    problems = validate(expected, load_validator())
    assert problems == [], problems


def test_check_reports_a_labelled_unified_diff(tmp_path: Path):
    case = tmp_path / "case"
    case.mkdir()
    for name in ("config.json", "rootfs.json"):
        (case / name).write_bytes((GOLDEN / "runc-spec-init" / name).read_bytes())
    golden.update(case, POLICY)
    patch = json.loads((case / "expected.patch.json").read_text())
    patch[0]["value"]["destination"] = "/elsewhere"
    (case / "expected.patch.json").write_text(json.dumps(patch, indent=2) + "\n")
    mismatches = golden.check(case, POLICY)
    assert [m.file for m in mismatches] == ["expected.patch.json"]
    diff = mismatches[0].unified_diff()
    assert "case/expected.patch.json (expected)" in diff and "(actual)" in diff
    assert '-      "destination": "/elsewhere",' in diff
    assert "/elsewhere" in _deepdiff_summary(mismatches[0])
