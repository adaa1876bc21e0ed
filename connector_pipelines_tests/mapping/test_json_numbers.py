"""Request bodies carry decimals with every digit: a NUMERIC(20,2) amount has more digits than a float keeps."""

from __future__ import annotations

import json
from decimal import Decimal

from connector_pipelines.mapping.templates import compile_body, encode_json


def test_a_decimal_longer_than_a_float_keeps_every_digit() -> None:
    body = encode_json({"amount": Decimal("1234567890123456.78"), "tiny": [Decimal("-1.2345678901234567890E-30")]})

    assert body == '{"amount":1234567890123456.78,"tiny":[-1.2345678901234567890E-30]}'
    assert json.loads(body, parse_float=Decimal)["amount"] == Decimal("1234567890123456.78")


def test_a_short_decimal_is_written_as_a_plain_number() -> None:
    assert encode_json({"balance": Decimal("12.50"), "count": Decimal("3")}) == '{"balance":12.5,"count":3.0}'


def test_text_from_a_source_never_turns_into_a_number() -> None:
    # Text shaped like the encoder's own mark, NUL bytes and digits included, stays text: the mark has a random part.
    forged = "\x00" + "0" * 16 + "42\x00"
    render = compile_body({"note": "{{note}}", "amount": "{{amount}}"})

    body = encode_json(render({"note": forged, "amount": Decimal("98765432109876543.21")}))

    assert json.loads(body, parse_float=Decimal) == {"note": forged, "amount": Decimal("98765432109876543.21")}
