"""Run the spec's GX suites on pandas frames and report failures by suite, column and example
(and, given the loader's line numbers, the raw file and lines of the failing rows).

One ephemeral GX context per process (cached), progress bars and analytics off, nothing
written to disk. Flows call ``run_suites(...).raise_if_failed()`` before training; tests call
it on fixtures with bad rows and assert on the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations import ExpectationSuite
from great_expectations.core.batch_definition import BatchDefinition
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from core.spec import DatasetSpec
from validation.suites import build_suites, is_element_check

MAX_EXAMPLES = 5  # unexpected values kept per failure
# BASIC still lists unexpected values and observed values, at half the cost of GX's SUMMARY default.
RESULT_FORMAT = "BASIC"


@dataclass
class Failure:
    """One failed expectation."""

    expectation: str  # GX expectation type, e.g. expect_column_values_to_be_between; or "missing table"
    column: str | None  # the column checked; "a,b,c" for compound checks; None for table-level ones
    unexpected_count: int | None  # rows (list elements for list columns) that failed; None if not a row check
    examples: list  # up to MAX_EXAMPLES unexpected values, JSON-safe (timestamps as ISO strings)
    details: str = ""  # the check's description, observed value or the error GX raised
    at: str = ""  # where the first failing rows came from, e.g. "ratings.csv lines 21, 34"; "" if unknown


@dataclass
class SuiteResult:
    name: str
    success: bool
    evaluated: int  # expectations evaluated
    failures: list[Failure] = field(default_factory=list)


@dataclass
class ValidationReport:
    suites: list[SuiteResult]

    @property
    def success(self) -> bool:
        return all(s.success for s in self.suites)

    @property
    def evaluated(self) -> int:
        """Expectations run, over every suite."""
        return sum(s.evaluated for s in self.suites)

    @property
    def failed(self) -> int:
        """Expectations that failed, over every suite."""
        return sum(len(s.failures) for s in self.suites)

    def suite(self, name: str) -> SuiteResult:
        for s in self.suites:
            if s.name == name:
                return s
        raise KeyError(f"no suite {name!r} in this report (ran: {[s.name for s in self.suites]})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (examples are already JSON-safe)."""
        return {"success": self.success, "suites": [asdict(s) for s in self.suites]}

    def format_text(self, failures_only: bool = False) -> str:
        """Per suite a PASS/FAIL line, then one line per failed expectation."""
        lines = []
        for s in self.suites:
            if s.success:
                if not failures_only:
                    lines.append(f"PASS {s.name} ({s.evaluated} expectations)")
                continue
            lines.append(f"FAIL {s.name} ({len(s.failures)} of {s.evaluated} expectations failed)")
            lines.extend(f"  - {_format_failure(f)}" for f in s.failures)
        return "\n".join(lines)

    def raise_if_failed(self) -> "ValidationReport":
        """Raise ValidationError if any suite failed; return the report otherwise."""
        if not self.success:
            raise ValidationError(self)
        return self


class ValidationError(Exception):
    """Data failed validation; ``.report`` holds the full report, str() its failures."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(report.format_text(failures_only=True))


def run_suites(
    spec: DatasetSpec,
    frames: dict[str, pd.DataFrame],
    now: datetime | None = None,
    suites: list[str] | None = None,
    lines: Mapping[str, tuple[str, np.ndarray]] | None = None,
) -> ValidationReport:
    """Validate each frame against the suite of the same name (see ``build_suites``).

    Without ``suites``, every given frame is validated and the others are skipped; a name in
    ``suites`` with no frame is reported as a "missing table" failure. Frames or suite names
    that match no suite raise ValueError (a typo must not skip validation silently). ``lines``:
    frame name -> (raw file, 1-based line of each frame row), the loader's ``RawTables.lines``.
    """
    built = build_suites(spec, now)
    unknown = sorted((set(frames) | set(suites or [])) - set(built))
    if unknown:
        raise ValueError(f"no validation suite named {unknown} (known: {list(built)})")
    wanted = set(frames) if suites is None else set(suites)
    results = []
    for name, suite in built.items():  # report in the suites' own order
        if name not in wanted:
            continue
        if name in frames:
            results.append(validate_frame(suite, frames[name], (lines or {}).get(name)))
        else:
            missing = Failure("missing table", None, None, [], f"no frame named {name!r} was given")
            results.append(SuiteResult(name, success=False, evaluated=0, failures=[missing]))
    return ValidationReport(results)


def snapshot_result(problem: str | None) -> SuiteResult:
    """The snapshots-match-the-warehouse check as a suite (``core.snapshots.snapshot_problem``'s answer)."""
    failures = [Failure("snapshots match the warehouse", None, None, [],
                        f"{problem}: run `clickprompt data ingest` to rebuild them")] if problem else []
    return SuiteResult("snapshots", success=not failures, evaluated=1, failures=failures)


def gate(spec: DatasetSpec, frames: Mapping[str, pd.DataFrame], now: datetime | None = None,
         lines: Mapping[str, tuple[str, np.ndarray]] | None = None) -> ValidationReport:
    """The data path's quality gate (``ingestion.warehouse.Gate``): every given frame against its
    suite; raises ValidationError naming the column, expectation and examples on any failure, and
    the raw file and lines of the failing rows where ``lines`` has the frame's (see ``run_suites``)."""
    return run_suites(spec, dict(frames), now=now, lines=lines).raise_if_failed()


def validate_frame(suite: ExpectationSuite, frame: pd.DataFrame,
                   lines: tuple[str, np.ndarray] | None = None) -> SuiteResult:
    """Run one suite on one frame; list-element checks run on the exploded list column. ``lines``:
    (raw file, 1-based line of each row of ``frame``), to name where failing rows came from."""
    if lines is not None and len(lines[1]) != len(frame):
        lines = None  # not this frame's rows (a loader bug): naming no lines beats naming wrong ones
    if lines is not None and not frame.index.equals(pd.RangeIndex(len(frame))):
        frame = frame.reset_index(drop=True)  # GX reports index labels; lines go by position
    element_checks = [e for e in suite.expectations if is_element_check(e)]
    row_checks = [e for e in suite.expectations if not is_element_check(e)]
    # The suite's expectations are bound to it (GX refuses to share them): the run gets copies.
    rows = ExpectationSuite(name=suite.name, expectations=[e.copy(update={"id": None}) for e in row_checks])
    checked = [(r, frame) for r in _batch(frame).validate(rows, result_format=RESULT_FORMAT).results]
    for e in element_checks:
        if e.column in frame.columns:  # a missing column is reported by its ExpectColumnToExist
            elements = frame[[e.column]].explode(e.column)  # each element keeps its row's index
            checked.append((_batch(elements).validate(e, result_format=RESULT_FORMAT), elements))
    results = [r for r, _ in checked]
    failures = [_failure(r, _located(r, checked_frame, lines)) for r, checked_frame in checked if not r.success]
    failures.sort(key=lambda f: (f.column or "", f.expectation, f.details))
    return SuiteResult(suite.name, success=not failures, evaluated=len(results), failures=failures)


# --- GX plumbing -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _batch_definition() -> BatchDefinition:
    """The process's one in-memory GX context, with a whole-dataframe batch definition."""
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        # TQDM_DISABLE does not reach GX's bars; only the context config does.
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas("clickprompt_validation").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


def _batch(frame: pd.DataFrame):
    return _batch_definition().get_batch(batch_parameters={"dataframe": frame})


def _located(result: Any, frame: pd.DataFrame, lines: tuple[str, np.ndarray] | None) -> str:
    """The raw file and lines of a failed row check's first failing rows ("u.data lines 3, 9").
    BASIC results carry no row index: the failed check alone runs again in SUMMARY format."""
    if lines is None or not (result.result or {}).get("unexpected_count"):
        return ""
    again = _batch(frame).validate(result.expectation_config.to_domain_obj(), result_format="SUMMARY")
    index = (again.result or {}).get("partial_unexpected_index_list") or []
    rows = sorted({int(lines[1][i]) for i in index})  # a list column's elements share their row's line
    numbers = rows[:MAX_EXAMPLES]
    if not numbers:
        return ""
    more = ", ..." if result.result["unexpected_count"] > len(index) or len(rows) > len(numbers) else ""
    return f"{lines[0]} line{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}{more}"


def _failure(result: Any, at: str = "") -> Failure:
    """A failed ExpectationValidationResult as a Failure."""
    config = result.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column") or (",".join(kwargs["column_list"]) if kwargs.get("column_list") else None)
    outcome = result.result or {}
    details = [config.description or ""]
    if "observed_value" in outcome:
        details.append(f"observed {_json_safe(outcome['observed_value'])}")
    error = _exception_message(result.exception_info)
    if error:
        details.append(f"error: {error}")
    return Failure(
        expectation=config.type,
        column=column,
        unexpected_count=outcome.get("unexpected_count"),
        examples=[_json_safe(v) for v in (outcome.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]],
        details="; ".join(d for d in details if d),
        at=at,
    )


def _exception_message(info: dict | None) -> str | None:
    """GX reports errors flat ({raised_exception, exception_message}) or per metric id."""
    if not info:
        return None
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for entry in entries:
        if entry.get("raised_exception"):
            return str(entry.get("exception_message"))
    return None


def _json_safe(value: Any) -> Any:
    """GX hands back numpy scalars, Timestamps, NaN and row dicts; make them plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if value is pd.NaT or value is pd.NA or value is None:
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (bool, int, float)):
        return value
    return str(value)


def _format_failure(f: Failure) -> str:
    where = f"column {f.column}" if f.column else "table"
    text = f"{f.expectation} on {where}"
    if f.unexpected_count is not None:
        text += f": {f.unexpected_count} unexpected"
    if f.examples:
        text += f", e.g. {json.dumps(f.examples[:MAX_EXAMPLES], ensure_ascii=False)}"
    if f.details:
        text += f" ({f.details})"
    if f.at:
        text += f" at {f.at}"
    return text
