"""Declared expectations as blocking Dagster asset checks: their specs and their results (integration data sets)."""

from __future__ import annotations

import dagster as dg

from connector_pipelines.factories.naming import expectation_check_name
from connector_pipelines.imports.expectations import ExpectationResult
from connector_pipelines.spec.imports import ExpectationSpec


def check_name(expectation: ExpectationSpec, index: int) -> str:
    return expectation_check_name(expectation.expect, expectation.column, index)


def rule_text(expectation: ExpectationSpec) -> str:
    """The rule in words, for a check's description: "Great Expectations: email is never empty"."""
    what = {
        "not_null": "is never empty",
        "unique": "holds no value twice",
        "in_set": f"is one of {', '.join(str(v) for v in expectation.values)}",
        "regex": f"matches {expectation.pattern!r}",
        "between": f"is between {expectation.min} and {expectation.max}",
    }[expectation.expect]
    share = "" if expectation.mostly == 1 else f" (in at least {expectation.mostly:.0%} of rows)"
    return f"Great Expectations: {expectation.column} {what}{share}"


def describe(expectation: ExpectationSpec) -> str:
    warning = "" if expectation.blocking else "; severity warn: reported, does not stop delivery"
    return rule_text(expectation) + warning


def check_specs(asset_key: dg.AssetKey, expectations: list[ExpectationSpec]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(check_name(e, index), asset=asset_key, blocking=e.blocking, description=describe(e))
        for index, e in enumerate(expectations)
    ]


def check_result(
    asset_key: dg.AssetKey, expectation: ExpectationSpec, index: int, result: ExpectationResult
) -> dg.AssetCheckResult:
    """One expectation's verdict: ERROR severity (`severity: error`, the default) stops what depends on the asset,
    WARN only reports."""
    elements = result.element_count
    error = result.details.get("error")
    return dg.AssetCheckResult(
        check_name=check_name(expectation, index),
        asset_key=asset_key,
        passed=result.success,
        severity=dg.AssetCheckSeverity.ERROR if expectation.blocking else dg.AssetCheckSeverity.WARN,
        metadata={
            "unexpected_count": dg.MetadataValue.int(result.unexpected_count),
            "element_count": dg.MetadataValue.int(elements),
            "unexpected_percent": dg.MetadataValue.float(round(result.unexpected_percent, 3)),
            "sample_unexpected": dg.MetadataValue.text(", ".join(repr(v) for v in result.sample_unexpected)),
        },
        description=f"{expectation.column}: {error}" if error else None,
    )
