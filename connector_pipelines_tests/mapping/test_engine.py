"""The mapping engine: compiling rules (and refusing bad ones), mapping columns and pyarrow batches."""

from __future__ import annotations

import pickle
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from connector_pipelines.mapping import (
    NO_CONSTANT,
    CompiledMapping,
    FieldRule,
    MappedBatch,
    MappingError,
    TargetField,
)

CONTACT_FIELDS = [
    TargetField("id", "integer", required=True),
    TargetField("email", "text", required=True),
    TargetField("full_name"),
    TargetField("signed_up", "date"),
    TargetField("balance", "currency"),
    TargetField("source"),
    TargetField("active", "boolean"),
]


def problems_of(rules, fields=(), lookups=None) -> list[str]:
    """The problems MappingError lists for a mapping that must not compile."""
    with pytest.raises(MappingError) as caught:
        CompiledMapping(rules, fields, lookups)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def test_maps_copies_expressions_constants_parses_and_types() -> None:
    mapping = CompiledMapping(
        [
            FieldRule("id", source="contact_id"),
            FieldRule("email", expression="lower(trim(email))"),
            FieldRule("full_name", expression="concat(first, ' ', last)"),
            FieldRule("signed_up", source="signup", parse="date:%d/%m/%Y"),
            FieldRule("balance", source="balance", parse="currency:eu"),
            FieldRule("source", constant="crm"),
            FieldRule("active", source="active"),
        ],
        CONTACT_FIELDS,
    )
    assert mapping.targets == ("id", "email", "full_name", "signed_up", "balance", "source", "active")
    assert mapping.source_columns == {"contact_id", "email", "first", "last", "signup", "balance", "active"}
    columns = {
        "contact_id": ["1", 2],
        "email": [" Ada@Example.com ", "grace@example.com"],
        "first": ["Ada", "Grace"],
        "last": ["Lovelace", None],
        "signup": ["31/03/2024", ""],
        "balance": ["1.234,56 €", "(0,50)"],
        "active": ["yes", "N"],
    }
    batch = mapping.map_columns(columns, 2)
    assert batch.errors == [None, None]
    assert batch.records() == [
        {
            "id": 1,
            "email": "ada@example.com",
            "full_name": "Ada Lovelace",
            "signed_up": date(2024, 3, 31),
            "balance": Decimal("1234.56"),
            "source": "crm",
            "active": True,
        },
        {
            "id": 2,
            "email": "grace@example.com",
            "full_name": "Grace ",
            "signed_up": None,
            "balance": Decimal("-0.50"),
            "source": "crm",
            "active": False,
        },
    ]
    assert (batch.n_rows, batch.ok_count, batch.failed_count) == (2, 2, 0)


def test_one_bad_date_among_good_ones_fails_only_that_row() -> None:
    mapping = CompiledMapping(
        [FieldRule("id", source="id"), FieldRule("created", expression="date_format(created_at, '%d/%m/%Y')")],
        [TargetField("id", "integer"), TargetField("created")],
    )
    created = ["2024-03-31", "2024-13-45", "2024-01-02T10:00:00", None]
    batch = mapping.map_columns({"id": [1, 2, 3, 4], "created_at": created}, 4)
    assert batch.errors == [
        None,
        "created: date_format: '2024-13-45' is not a date (expected ISO-8601 such as 2024-03-31)",
        None,
        None,
    ]
    assert batch.columns == {"id": [1, None, 3, 4], "created": ["31/03/2024", None, "02/01/2024", None]}
    assert batch.records() == [
        {"id": 1, "created": "31/03/2024"},
        None,
        {"id": 3, "created": "02/01/2024"},
        {"id": 4, "created": None},
    ]
    assert (batch.ok_count, batch.failed_count) == (3, 1)
    assert batch.failures() == [(1, batch.errors[1])]


def test_row_failing_in_several_fields_lists_every_reason() -> None:
    mapping = CompiledMapping(
        [FieldRule("id", source="id"), FieldRule("amount", source="amount", parse="number")],
        [TargetField("id", "integer", required=True), TargetField("amount", "number")],
    )
    batch = mapping.map_columns({"id": [None, "7.5"], "amount": ["12,5", "3"]}, 2)
    assert batch.errors == [
        "id: required field is empty; amount: '12,5' is not a number (expected e.g. 1,234.56)",
        "id: '7.5' is not a whole number",
    ]
    assert batch.records() == [None, None]


def test_required_field_empty_fails_the_row() -> None:
    mapping = CompiledMapping(
        [FieldRule("email", source="email"), FieldRule("name", source="name")],
        [TargetField("email", required=True), TargetField("name")],
    )
    batch = mapping.map_columns({"email": ["a@example.com", "", None], "name": ["A", "B", None]}, 3)
    assert batch.errors == [None, "email: required field is empty", "email: required field is empty"]
    assert batch.columns["name"] == ["A", None, None]


def test_default_fills_none_and_empty_before_type_and_required_checks() -> None:
    mapping = CompiledMapping(
        [
            FieldRule("email", source="email", default="unknown@example.com"),
            FieldRule("score", source="score", default="0"),
            FieldRule("country", expression="upper(country)", default="NL"),
        ],
        [TargetField("email", required=True), TargetField("score", "integer"), TargetField("country")],
    )
    batch = mapping.map_columns(
        {"email": ["", None, "a@b.c"], "score": [None, "", "5"], "country": ["be", None, ""]}, 3
    )
    assert batch.errors == [None, None, None]
    assert batch.columns == {
        "email": ["unknown@example.com", "unknown@example.com", "a@b.c"],
        "score": [0, 0, 5],
        "country": ["BE", "NL", "NL"],
    }


def test_parse_applies_to_an_expression_result() -> None:
    mapping = CompiledMapping(
        [FieldRule("amount", expression="replace(amount, ' EUR', '')", parse="number:eu")],
        [TargetField("amount", "number")],
    )
    batch = mapping.map_columns({"amount": ["1.234,5 EUR", "7 EUR"]}, 2)
    assert batch.columns["amount"] == [1234.5, 7.0]


def test_constants_are_typed_and_parsed_once() -> None:
    mapping = CompiledMapping(
        [
            FieldRule("source", constant="crm"),
            FieldRule("priority", constant="3"),
            FieldRule("since", constant="01/02/2024", parse="date:%d/%m/%Y"),
            FieldRule("nothing", constant=None),
        ],
        [
            TargetField("source"),
            TargetField("priority", "integer"),
            TargetField("since", "date"),
            TargetField("nothing"),
        ],
    )
    batch = mapping.map_columns({}, 2)
    assert batch.records() == [{"source": "crm", "priority": 3, "since": date(2024, 2, 1), "nothing": None}] * 2


def test_a_source_column_may_feed_two_targets_without_sharing_lists() -> None:
    # Untyped targets take the column as it is: the engine must still copy it before blanking failed rows.
    mapping = CompiledMapping(
        [
            FieldRule("email", source="email"),
            FieldRule("login", source="email"),
            FieldRule("check", source="check", parse="integer"),
        ]
    )
    emails = ["a@example.com", "b@example.com"]
    batch = mapping.map_columns({"email": emails, "check": [1, "x"]}, 2)
    assert mapping.source_columns == {"email", "check"}
    assert batch.errors == [None, "check: 'x' is not a number (expected e.g. 1,234.56)"]
    assert batch.columns["email"] == ["a@example.com", None]
    assert batch.columns["login"] == ["a@example.com", None]
    assert emails == ["a@example.com", "b@example.com"]  # the caller's list is never changed
    assert batch.columns["email"] is not batch.columns["login"]


def test_lookups_hit_and_miss() -> None:
    mapping = CompiledMapping(
        [FieldRule("owner", expression="coalesce(lookup('owner_email', owner_id), 'nobody@example.com')")],
        [TargetField("owner")],
        lookups={"owner_email": {"1": "ann@example.com", "2": "bob@example.com"}},
    )
    assert mapping.lookup_names == {"owner_email"}
    batch = mapping.map_columns({"owner_id": ["1", 2, "3", None]}, 4)
    assert batch.columns["owner"] == ["ann@example.com", "bob@example.com", "nobody@example.com", "nobody@example.com"]


def test_lookups_missing() -> None:
    rules = [FieldRule("owner", expression="lookup('owner_email', owner_id)")]
    problems = problems_of(rules, lookups={"owner_emails": {}})
    assert problems == [
        "lookup 'owner_email' is used but was not provided (did you mean 'owner_emails'?); "
        "provided lookups: owner_emails"
    ]
    # Compiling without lookups is allowed (to learn lookup_names); mapping rows then needs them.
    mapping = CompiledMapping(rules)
    assert mapping.lookup_names == {"owner_email"}
    with pytest.raises(MappingError, match="this mapping uses lookups \\(owner_email\\)"):
        mapping.map_columns({"owner_id": [1]}, 1)


def test_exactly_one_of_source_expression_constant() -> None:
    problems = problems_of(
        [
            FieldRule("a"),
            FieldRule("b", source="x", expression="upper(x)"),
            FieldRule("c", source="x", constant=None),
            FieldRule("d", constant=None),
        ]
    )
    assert problems == [
        "mapping for 'a' must set exactly one of source, expression or constant (it sets none)",
        "mapping for 'b' must set exactly one of source, expression or constant (it sets source and expression)",
        "mapping for 'c' must set exactly one of source, expression or constant (it sets source and constant)",
    ]
    assert FieldRule("x").constant is NO_CONSTANT


def test_duplicate_target_is_refused() -> None:
    problems = problems_of([FieldRule("email", source="email"), FieldRule("email", source="mail")])
    assert problems == ["two mappings write target field 'email' (mappings #1 and #2); map each target field once"]


def test_unknown_target_is_refused_with_did_you_mean() -> None:
    problems = problems_of([FieldRule("emial", source="email")], [TargetField("email"), TargetField("name")])
    assert problems == [
        "mapping #1 writes 'emial', which is not a target field (did you mean 'email'?); target fields: email, name"
    ]


def test_required_target_without_mapping_is_refused() -> None:
    problems = problems_of(
        [FieldRule("name", source="name")], [TargetField("email", required=True), TargetField("name")]
    )
    assert problems == ["required target field 'email' has no mapping"]


def test_configuration_problems_are_all_reported_together() -> None:
    problems = problems_of(
        [
            FieldRule("email", expression="uper(email)"),
            FieldRule("when", source="d", parse="date:%q"),
            FieldRule("count", source="n", default="many"),
            FieldRule("flag", constant="maybe"),
        ],
        [
            TargetField("email"),
            TargetField("when", "date"),
            TargetField("count", "integer"),
            TargetField("flag", "boolean"),
        ],
    )
    assert len(problems) == 4
    assert problems[0].startswith("mapping for 'email': unknown function 'uper' at column 1 (did you mean 'upper'?)")
    assert problems[1].startswith("mapping for 'when': source format 'date:%q': date format '%q' has an unknown")
    assert problems[2] == (
        "mapping for 'count': default 'many' does not fit type integer: 'many' is not a number (expected e.g. 1,234.56)"
    )
    assert problems[3].startswith("mapping for 'flag': constant 'maybe': 'maybe' is not a boolean")


def test_unknown_target_type_and_empty_required_constant() -> None:
    problems = problems_of([FieldRule("a", constant="")], [TargetField("a", "txt", required=True)])
    assert problems[0].startswith("target field 'a' has unknown type 'txt' (did you mean 'text'?)")
    problems = problems_of([FieldRule("a", constant="")], [TargetField("a", required=True)])
    assert problems == ["mapping for 'a': constant '': required field is empty"]


def test_check_columns_with_did_you_mean() -> None:
    mapping = CompiledMapping(
        [FieldRule("name", source="nmae"), FieldRule("city", expression="upper(cty)"), FieldRule("x", source="id")]
    )
    assert mapping.check_columns(["id", "name", "city"]) == [
        "mapping for 'name' reads column 'nmae', which the data set does not have (did you mean 'name'?)",
        "mapping for 'city' reads column 'cty', which the data set does not have (did you mean 'city'?)",
    ]
    assert mapping.check_columns(["id", "nmae", "cty"]) == []
    with pytest.raises(MappingError, match="reads column 'nmae'"):
        mapping.map_columns({"id": [1], "name": ["a"], "city": ["b"]}, 1)


def test_column_lengths_must_match_the_row_count() -> None:
    mapping = CompiledMapping([FieldRule("a", source="a")])
    with pytest.raises(MappingError, match="column 'a' has 2 values, expected 3 rows"):
        mapping.map_columns({"a": [1, 2]}, 3)


def test_map_batch_from_a_record_batch_with_dates_decimals_and_nulls() -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "id": pa.array([1, 2, None], pa.int64()),
            "name": pa.array(["ada", None, "grace"]),
            "signed_up": pa.array([date(2024, 3, 31), None, date(2023, 1, 2)], pa.date32()),
            "seen": pa.array([datetime(2024, 3, 31, 14, 5), None, None], pa.timestamp("us", tz="UTC")),
            "balance": pa.array([Decimal("1234.50"), None, Decimal("-0.10")], pa.decimal128(10, 2)),
            "unused": pa.array([b"x", b"y", b"z"]),
        }
    )
    mapping = CompiledMapping(
        [
            FieldRule("id", source="id"),
            FieldRule("name", expression="upper(name)", default="N/A"),
            FieldRule("signed_up", expression="date_format(signed_up, '%d/%m/%Y')"),
            FieldRule("signed_up_date", source="signed_up"),
            FieldRule("seen", source="seen"),
            FieldRule("balance", expression="number_format(balance, 1)"),
            FieldRule("balance_amount", source="balance"),
        ],
        [
            TargetField("id", "integer", required=True),
            TargetField("name"),
            TargetField("signed_up"),
            TargetField("signed_up_date", "date"),
            TargetField("seen", "datetime"),
            TargetField("balance"),
            TargetField("balance_amount", "currency"),
        ],
    )
    result = mapping.map_batch(batch)
    assert isinstance(result, MappedBatch)
    assert result.errors == [None, None, "id: required field is empty"]
    assert result.records()[:2] == [
        {
            "id": 1,
            "name": "ADA",
            "signed_up": "31/03/2024",
            "signed_up_date": date(2024, 3, 31),
            "seen": datetime(2024, 3, 31, 14, 5, tzinfo=UTC),
            "balance": "1,234.5",
            "balance_amount": Decimal("1234.50"),
        },
        {
            "id": 2,
            "name": "N/A",
            "signed_up": None,
            "signed_up_date": None,
            "seen": None,
            "balance": None,
            "balance_amount": None,
        },
    ]
    table_result = mapping.map_batch(pa.Table.from_batches([batch, batch]))
    assert table_result.n_rows == 6
    assert table_result.columns["balance"] == ["1,234.5", None, None] * 2


def test_map_batch_reports_missing_columns() -> None:
    mapping = CompiledMapping([FieldRule("name", source="nmae")])
    with pytest.raises(MappingError, match=r"reads column 'nmae', which the data set does not have \(did you mean"):
        mapping.map_batch(pa.RecordBatch.from_pydict({"name": ["a"]}))


def test_empty_batch_and_no_rules() -> None:
    mapping = CompiledMapping([FieldRule("a", source="a")])
    empty = mapping.map_columns({"a": []}, 0)
    assert (empty.n_rows, empty.records(), empty.columns) == (0, [], {"a": []})
    assert CompiledMapping([]).map_columns({}, 2).records() == [{}, {}]


def test_rules_without_target_fields_keep_values_untyped() -> None:
    mapping = CompiledMapping([FieldRule("amount", source="amount", parse="number")])
    assert mapping.map_columns({"amount": ["1,234.5"]}, 1).columns == {"amount": [Decimal("1234.5")]}


def test_no_constant_survives_pickling() -> None:
    rule = pickle.loads(pickle.dumps(FieldRule("a", source="b")))
    assert rule.constant is NO_CONSTANT
    assert rule == FieldRule("a", source="b")
