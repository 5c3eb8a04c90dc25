"""Great Expectations gates on the warehouse tables and Feast views, derived from the data set spec."""

from validation.runner import Failure, SuiteResult, ValidationError, ValidationReport, gate, run_suites, validate_frame
from validation.suites import build_suites, suite_names, text_regex

__all__ = [
    "Failure",
    "SuiteResult",
    "ValidationError",
    "ValidationReport",
    "build_suites",
    "gate",
    "run_suites",
    "suite_names",
    "text_regex",
    "validate_frame",
]
