"""Seed the demo warehouse: a SQLite database of realistic, deterministic billing data.

`seed_demo_warehouse(path)` builds five tables (accounts, contacts, loans, invoices, usage_events) from
`random.Random(20240101)`, so every call writes exactly the same rows. The file is built next to `path`
(``path.with_suffix('.tmp')``) and moved over `path` with `os.replace`, so readers never see half a database.

Conventions the connectors rely on:

- Timestamps are UTC text ``'YYYY-MM-DD HH:MM:SS'`` between 2024-01-01 00:00:00 and 2026-06-30 23:59:59, so a
  window filter such as ``issued_at >= ? AND issued_at < ?`` with bound parameters in the same format compares
  correctly as strings. Dates (``invoices.due_date``) are ``'YYYY-MM-DD'``; a due date may fall after the last
  timestamp (an invoice issued in June 2026 is due in July or August 2026).
- Money (``loans.principal``, ``invoices.amount``, ``invoices.tax``) is stored as REAL. Every value is made as
  integer cents / 100, so it is the double nearest to a 2-decimal number and ``repr`` gives at most two decimals
  (``12500.0``, ``1234.56``); format it with ``f"{x:.2f}"`` or ``Decimal(repr(x)).quantize(Decimal("0.01"))``.
  REAL (not NUMERIC affinity) keeps one storage class per column: NUMERIC would store ``12500.00`` as INTEGER.
  ``loans.interest_rate`` is REAL with at most 4 decimals (``0.0525``); ``usage_events.quantity`` is REAL.
- Ids grow with time: accounts by ``created_at``, contacts by ``created_at``, loans by ``issued_at``,
  invoices by ``issued_at`` (``invoice_number`` is ``INV-<year>-<6-digit sequence within the year>``),
  usage events by ``recorded_at`` (the ingestion order; some events arrive hours or days late).
- Messiness exports must survive: account names with commas, quotes, apostrophes, semicolons, pipes, a slash,
  an embedded newline and non-ASCII letters (`MESSY_ACCOUNT_NAMES`, always present); contact names with
  apostrophes and accents; NULLs in ``accounts.industry``, ``contacts.phone``, ``contacts.role``,
  ``invoices.tax``, ``invoices.paid_at`` and ``usage_events.quantity``; negative invoice amounts (credit notes).
"""

from __future__ import annotations

import bisect
import math
import os
import sqlite3
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from random import Random

__all__ = [
    "BASE_ROW_COUNTS",
    "MESSY_ACCOUNT_NAMES",
    "SEED",
    "TABLES",
    "TIMESTAMP_MAX",
    "TIMESTAMP_MIN",
    "demo_database_url",
    "seed_demo_warehouse",
]

SEED = 20240101
TIMESTAMP_MIN = "2024-01-01 00:00:00"
TIMESTAMP_MAX = "2026-06-30 23:59:59"
TABLES = ("accounts", "contacts", "loans", "invoices", "usage_events")
BASE_ROW_COUNTS = {"accounts": 2000, "contacts": 6000, "loans": 3000, "invoices": 150_000, "usage_events": 250_000}

# (name, country): always present, spread evenly over the account ids.
MESSY_ACCOUNT_NAMES: tuple[tuple[str, str], ...] = (
    ("Müller & Söhne, GmbH", "DE"),
    ('O\'Brien "Labs"', "IE"),
    ("Société Générale d'Électricité, S.A.", "FR"),
    ("Øresund Logistik ApS", "DK"),
    ("Łódź Software Sp. z o.o.", "PL"),
    ("São Paulo Café Ltda.", "BR"),
    ("東京データ株式会社", "JP"),
    ("Smith; Jones | Partners, LLC", "US"),
    ("Ærøskøbing Fisk A/S", "DK"),
    ("Northwind Traders\nHoldings Ltd", "GB"),
)

_DAY = 86_400
_EPOCH = date(2024, 1, 1)  # a Monday: weekday == day index % 7
_N_DAYS = (date(2026, 7, 1) - _EPOCH).days  # 912
_END = _N_DAYS * _DAY - 1  # 2026-06-30 23:59:59 as seconds since _EPOCH
_DATE_STRINGS = [(_EPOCH + timedelta(days=d)).isoformat() for d in range(_N_DAYS + 200)]
_TIME_STRINGS = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(_DAY)]
# Month starts (day index) from 2024-01 to 2026-06.
_MONTH_STARTS = [(date(2024 + m // 12, m % 12 + 1, 1) - _EPOCH).days for m in range(30)]

# Activity by hour of day (UTC), weekdays; weekends are accepted with probability _WEEKEND_ACCEPT.
_HOUR_WEIGHTS = [1, 0.6, 0.4, 0.4, 0.5, 0.8, 1.5, 3, 6, 9, 10, 10, 8, 9, 10, 9.5, 8.5, 7, 5, 3.5, 2.8, 2.2, 1.6, 1.2]
_HOUR_CUM = [sum(_HOUR_WEIGHTS[: i + 1]) for i in range(24)]
_HOUR_TOTAL = _HOUR_CUM[-1]
_WEEKEND_ACCEPT = 0.3


def _ts(t: int) -> str:
    return _DATE_STRINGS[t // _DAY] + " " + _TIME_STRINGS[t % _DAY]


# ---------------------------------------------------------------------------------------------- reference data

# country: (weight, currency, VAT in basis points, dial code, legal suffixes, email tld)
_COUNTRIES: dict[str, tuple[float, str, int, str, tuple[str, ...], str]] = {
    "US": (24, "USD", 0, "+1", ("Inc.", "LLC", "Corp."), "com"),
    "GB": (12, "GBP", 2000, "+44", ("Ltd", "plc"), "co.uk"),
    "DE": (11, "EUR", 1900, "+49", ("GmbH", "AG"), "de"),
    "FR": (7, "EUR", 2000, "+33", ("SAS", "SARL"), "fr"),
    "NL": (6, "EUR", 2100, "+31", ("B.V.",), "nl"),
    "ES": (4, "EUR", 2100, "+34", ("S.L.", "S.A."), "es"),
    "IT": (4, "EUR", 2200, "+39", ("S.r.l.", "S.p.A."), "it"),
    "SE": (3, "EUR", 2500, "+46", ("AB",), "se"),
    "DK": (2, "EUR", 2500, "+45", ("ApS", "A/S"), "dk"),
    "NO": (2, "EUR", 2500, "+47", ("AS",), "no"),
    "FI": (2, "EUR", 2400, "+358", ("Oy",), "fi"),
    "PL": (3, "EUR", 2300, "+48", ("Sp. z o.o.",), "pl"),
    "IE": (3, "EUR", 2300, "+353", ("Ltd", "DAC"), "ie"),
    "CH": (2, "EUR", 810, "+41", ("AG", "GmbH"), "ch"),
    "AT": (2, "EUR", 2000, "+43", ("GmbH",), "at"),
    "BE": (2, "EUR", 2100, "+32", ("BV", "SA"), "be"),
    "PT": (1, "EUR", 2300, "+351", ("Lda.",), "pt"),
    "CA": (4, "USD", 500, "+1", ("Inc.", "Ltd."), "ca"),
    "AU": (3, "USD", 1000, "+61", ("Pty Ltd",), "com.au"),
    "JP": (1, "USD", 1000, "+81", ("K.K.",), "jp"),
    "BR": (1, "USD", 0, "+55", ("Ltda.",), "com.br"),
    "SG": (1, "USD", 900, "+65", ("Pte. Ltd.",), "sg"),
}
_COUNTRY_CODES = list(_COUNTRIES)
_COUNTRY_CUM = [sum(_COUNTRIES[c][0] for c in _COUNTRY_CODES[: i + 1]) for i in range(len(_COUNTRY_CODES))]

_INDUSTRIES = (
    "Software",
    "Financial Services",
    "Healthcare",
    "Retail",
    "Manufacturing",
    "Logistics",
    "Education",
    "Media & Entertainment",
    "Energy",
    "Hospitality",
    "Real Estate",
    "Agriculture",
    "Legal Services",
    "Consulting",
    "Telecommunications",
    "Non-profit",
)
_ROOTS = (
    "Acme", "Northwind", "Blue Harbor", "Brightline", "Cedar", "Copperleaf", "Evergreen", "Falcon", "Granite",
    "Harborview", "Ironclad", "Juniper", "Keystone", "Lumen", "Maple", "Meridian", "Nimbus", "Oakridge",
    "Pinnacle", "Quantum", "Redwood", "Silverline", "Summit", "Tidewater", "Vertex", "Willow", "Zenith", "Atlas",
    "Beacon", "Cobalt", "Driftwood", "Ember", "Fjord", "Glacier", "Helix", "Indigo", "Kestrel", "Lighthouse",
    "Mosaic", "Nordlicht", "Orbit", "Polaris", "Riverstone", "Sequoia", "Tundra", "Umbra", "Vantage", "Westwind",
)  # fmt: skip
_NOUNS = (
    "Analytics", "Systems", "Logistics", "Foods", "Health", "Labs", "Partners", "Software", "Energy", "Capital",
    "Media", "Robotics", "Supply", "Studios", "Ventures", "Works", "Networks", "Dynamics", "Holdings", "Solutions",
    "Freight", "Clinics", "Retail", "Design", "Data", "Bio", "Finance", "Outdoor", "Textiles", "Motors",
)  # fmt: skip
_FIRST_NAMES = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Susan", "Richard", "Jessica", "Thomas", "Sarah", "Daniel", "Karen", "Matthew", "Emily",
    "Anna", "Lukas", "Sophie", "Jonas", "Lea", "Felix", "Hannah", "Maximilian", "Marie", "Paul",
    "Chloé", "Léa", "François", "Hélène", "Mathéo", "Zoë", "José", "María", "Lucía", "Álvaro",
    "Giulia", "Matteo", "Søren", "Åsa", "Björn", "Jörg", "Jürgen", "Łukasz", "Zofia", "Małgorzata",
    "Siobhán", "Seán", "Aoife", "Niamh", "Hiroshi", "Yuki", "Priya", "Arjun", "Wei", "Mei",
    "João", "Inês", "Mateus", "Olivia", "Noah", "Liam", "Emma", "Ava", "Lars", "Ingrid",
)  # fmt: skip
_LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Wilson", "Taylor",
    "Anderson", "Thomas", "Moore", "Martin", "Jackson", "White", "Harris", "Clark", "Lewis", "Walker",
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schäfer", "Groß",
    "Dubois", "Lefèvre", "Moreau", "Girard", "Fournier", "García", "Martínez", "López", "Sánchez", "Núñez",
    "Rossi", "Russo", "Ferrari", "D'Angelo", "O'Brien", "O'Connor", "McCarthy", "Ó Súilleabháin", "Nielsen",
    "Jørgensen", "Andersson", "Lindström", "Virtanen", "Kowalski", "Wiśniewski", "Nowak", "Tanaka", "Sato",
    "Nguyễn", "Patel", "Sharma", "Chen", "Wang", "Silva", "Gonçalves", "van der Berg", "de Vries", "Smith-Jones",
)  # fmt: skip
_ROLES = (
    "Billing Admin", "Finance Manager", "CFO", "Controller", "Accounts Payable", "CTO", "Engineering Lead",
    "Procurement", "Owner", "Operations Manager",
)  # fmt: skip
_FREE_MAIL = ("gmail.com", "outlook.com", "yahoo.com", "proton.me")
_LEGAL_WORDS = frozenset((
    "inc", "llc", "corp", "ltd", "plc", "gmbh", "ag", "sas", "sarl", "bv", "nv", "sl", "sa", "srl", "spa", "ab",
    "aps", "as", "oy", "sp", "z", "o", "oo", "dac", "lda", "pty", "kk", "ltda", "pte", "co",
))  # fmt: skip
_PLANS = ("starter", "growth", "enterprise")
_PLAN_CUM = (0.55, 0.88, 1.0)
_METRICS = ("api_calls", "storage_gb", "seats", "compute_hours", "data_transfer_gb", "emails_sent")
_METRIC_CUM = [sum((40, 15, 8, 15, 12, 10)[: i + 1]) for i in range(6)]
_TERMS = (6, 12, 18, 24, 36, 48, 60)
_ASCII_FOLD = str.maketrans({"ß": "ss", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ł": "l", "Ł": "L", "đ": "d"})


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_ASCII_FOLD))
    return folded.encode("ascii", "ignore").decode("ascii").lower()


def _email_part(text: str) -> str:
    return "".join(ch for ch in _ascii(text) if ch.isalnum())


# ---------------------------------------------------------------------------------------------- generation


@dataclass(slots=True)
class _Account:
    name: str
    industry: str | None
    country: str
    plan: str
    status: str
    created: int
    end: int  # last second of activity: churn time, or the end of the range
    updated: int
    currency: str
    vat_bp: int
    terms: int
    pay_prob: float
    subscriptions: tuple[int, ...]  # monthly price per subscription, in cents
    account_id: int = 0
    domain: str = ""


class _Clock:
    """Samples timestamps with a business-week shape: weekdays and office hours are busier."""

    def __init__(self, rng: Random) -> None:
        self.random = rng.random

    def in_day(self, day: int) -> int:
        hour = bisect.bisect_right(_HOUR_CUM, self.random() * _HOUR_TOTAL)
        return day * _DAY + min(hour, 23) * 3600 + int(self.random() * 3600)

    def between(self, lo: int, hi: int) -> int:
        """A shaped second in [lo, hi] (both inclusive)."""
        random = self.random
        lo_day, span = lo // _DAY, hi // _DAY - lo // _DAY + 1
        for _ in range(30):
            day = lo_day + int(random() * span)
            if day % 7 >= 5 and random() > _WEEKEND_ACCEPT:
                continue
            t = day * _DAY + bisect.bisect_right(_HOUR_CUM, random() * _HOUR_TOTAL) * 3600 + int(random() * 3600)
            if lo <= t <= hi:
                return t
        return lo + int(random() * (hi - lo + 1))


def _company_name(rng: Random, country: str) -> str:
    legal = rng.choice(_COUNTRIES[country][4])
    style = rng.random()
    if style < 0.45:
        base = f"{rng.choice(_ROOTS)} {rng.choice(_NOUNS)}"
    elif style < 0.65:
        first, second = rng.sample(_LAST_NAMES, 2)
        base = f"{first} & {second}"
    elif style < 0.85:
        base = f"{rng.choice(_ROOTS)}{rng.choice(_NOUNS).lower()}"
    else:
        base = f"{rng.choice(_LAST_NAMES)} {rng.choice(_NOUNS)}"
    # US style puts a comma before the legal form ("Acme Analytics, Inc.").
    sep = ", " if country in ("US", "CA") and rng.random() < 0.5 else " "
    return f"{base}{sep}{legal}"


def _domain(name: str, country: str, account_id: int) -> str:
    words = [w for w in (_email_part(part) for part in name.replace("&", " ").split()) if w]
    words = [w for w in words if w not in _LEGAL_WORDS] or words
    slug = "".join(words[:2])[:24] or f"acct{account_id}"
    return f"{slug}.{_COUNTRIES[country][5]}"


def _make_accounts(rng: Random, clock: _Clock, n: int) -> list[_Account]:
    random = rng.random
    raw: list[_Account] = []
    for _ in range(n):
        # Growth: creation density rises over the range (0.35 + 1.3x), weekdays and office hours preferred.
        while True:
            u = random()
            x = u if random() < 0.35 else math.sqrt(u)
            day = min(int(x * _N_DAYS), _N_DAYS - 1)
            if day % 7 < 5 or random() < _WEEKEND_ACCEPT:
                break
        created = clock.in_day(day)
        country = _COUNTRY_CODES[bisect.bisect_right(_COUNTRY_CUM, random() * _COUNTRY_CUM[-1])]
        _, currency, vat_bp, _, _, _ = _COUNTRIES[country]
        plan = _PLANS[bisect.bisect_right(_PLAN_CUM, random())]
        if plan == "starter":
            subs = (rng.choice((4900, 9900, 14900, 29900)),)
        elif plan == "growth":
            subs = tuple(rng.choice((49900, 79900, 120000, 195000, 290000)) for _ in range(1 + (random() < 0.4)))
        else:
            subs = tuple(rng.randrange(90, 900) * 5000 for _ in range(rng.randint(2, 5)))
        end, status = _END, "active"
        if created > _END - 30 * _DAY and random() < 0.75:
            status = "trial"
        else:
            churn_rate = {"starter": 0.45, "growth": 0.3, "enterprise": 0.12}[plan]
            if random() < churn_rate:
                churn = created + 45 * _DAY + int(rng.expovariate(1 / (320 * _DAY)))
                if churn < _END:
                    end, status = clock.between(churn, min(churn + 3 * _DAY, _END)), "churned"
        if status == "churned":
            updated = end
        elif status == "trial":
            updated = clock.between(created, min(created + 7 * _DAY, _END))
        else:
            updated = clock.between(max(created, _END - int(random() ** 2 * (_END - created))), _END)
        raw.append(
            _Account(
                name=_company_name(rng, country),
                industry=None if random() < 0.07 else rng.choice(_INDUSTRIES),
                country=country,
                plan=plan,
                status=status,
                created=created,
                end=end,
                updated=updated,
                currency=currency,
                vat_bp=vat_bp,
                terms=rng.choice((14, 30, 30, 30, 45, 60) if plan == "enterprise" else (14, 14, 30, 30, 30, 45)),
                pay_prob=0.8 if status == "churned" else (0.985 if random() < 0.9 else 0.9),
                subscriptions=subs,
            )
        )
    raw.sort(key=lambda a: a.created)
    # The messy names go to evenly spread positions so that even a tiny sample holds them.
    k = min(len(MESSY_ACCOUNT_NAMES), n)
    for j in range(k):
        acct = raw[(j * n) // k + (n // k) // 2]
        acct.name, acct.country = MESSY_ACCOUNT_NAMES[j]
        _, acct.currency, acct.vat_bp, _, _, _ = _COUNTRIES[acct.country]
    for i, acct in enumerate(raw, start=1):
        acct.account_id = i
        acct.domain = _domain(acct.name, acct.country, i) if random() > 0.05 else rng.choice(_FREE_MAIL)
    return raw


def _phone(rng: Random, country: str) -> str | None:
    r = rng.random()
    if r < 0.15:
        return None
    dial = _COUNTRIES[country][3]
    digits = str(rng.randrange(10**8, 10**9))
    if dial == "+1":
        number = f"{dial} ({rng.randint(201, 989)}) 555-{digits[:4]}"
    elif r < 0.85:
        number = f"{dial} {digits[:2]} {digits[2:5]} {digits[5:]}"
    else:
        number = f"0{digits[:3]}-{digits[3:]}"  # national format, no country code
    if rng.random() < 0.04:
        number += f" ext. {rng.randint(10, 999)}"
    return number


def _make_contacts(rng: Random, clock: _Clock, accounts: list[_Account], n: int) -> list[tuple]:
    random = rng.random
    # Every account gets one contact (while they last); the rest go mostly to bigger plans.
    owners = list(accounts[:n])
    if n > len(accounts):
        weights = [{"starter": 1.0, "growth": 2.5, "enterprise": 6.0}[a.plan] for a in accounts]
        owners += rng.choices(accounts, weights=weights, k=n - len(accounts))
    seen_first: set[int] = set()
    used_emails: set[str] = set()
    rows = []
    for acct in owners:
        if acct.account_id not in seen_first:  # the person who signed up
            seen_first.add(acct.account_id)
            created = min(acct.created + 60 + int(random() * 3000), acct.end)
        else:
            created = clock.between(acct.created, acct.end)
        updated = created if random() < 0.55 else clock.between(created, acct.end if acct.end > created else _END)
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        f, l_ = _email_part(first), _email_part(last)
        style = random()
        local = f"{f}.{l_}" if style < 0.6 else (f"{f[0]}{l_}" if style < 0.85 else f"{f}_{l_}")
        email = f"{local}@{acct.domain}"
        suffix = 2
        while email in used_emails:
            email = f"{local}{suffix}@{acct.domain}"
            suffix += 1
        used_emails.add(email)
        role = None if random() < 0.1 else rng.choice(_ROLES)
        rows.append((created, acct.account_id, first, last, email, _phone(rng, acct.country), role, updated))
    rows.sort(key=lambda r: r[0])
    return rows


def _make_loans(rng: Random, clock: _Clock, accounts: list[_Account], n: int) -> list[tuple]:
    random = rng.random
    eligible = [a for a in accounts if a.status != "trial"] or accounts
    weights = [
        (a.end - a.created + _DAY) * {"starter": 1.0, "growth": 2.0, "enterprise": 3.0}[a.plan] for a in eligible
    ]
    rows = []
    for acct in rng.choices(eligible, weights=weights, k=n):
        lo = acct.created + 30 * _DAY
        issued = clock.between(lo, acct.end) if lo < acct.end else clock.between(acct.created, acct.end)
        top = {"starter": 60_000, "growth": 250_000, "enterprise": 1_500_000}[acct.plan]
        principal = max(1000, round(math.exp(math.log(5000) + random() * math.log(top / 5000)) / 500) * 500)
        currency = acct.currency if random() < 0.9 else rng.choice(("EUR", "USD", "GBP"))
        rate = rng.randrange(295, 1450, 5) / 10000
        term = rng.choice(_TERMS)
        maturity = issued + int(term * 30.44 * _DAY)
        default_p = 0.3 if acct.status == "churned" else 0.06
        if random() < default_p and issued + 90 * _DAY < _END:  # defaults come after 3 missed payments
            status = "defaulted"
            updated = clock.between(issued + 90 * _DAY, min(maturity, _END))
        elif maturity <= _END:
            status = "repaid"
            early = random() < 0.2
            updated = clock.between(issued + (maturity - issued) // 3, maturity) if early else min(maturity, _END)
        else:
            status = "active"  # updated by the latest monthly payment
            updated = clock.between(max(issued, _END - 30 * _DAY), _END)
        rows.append((issued, acct.account_id, principal * 1.0, currency, rate, term, status, updated))
    rows.sort(key=lambda r: r[0])
    return rows


def _make_invoices(rng: Random, clock: _Clock, accounts: list[_Account], n: int) -> list[tuple]:
    random = rng.random
    billable = [a for a in accounts if a.status != "trial"] or accounts
    # Monthly invoice runs: on the 1st from 02:00 UTC, one invoice per subscription, in account order.
    drafts: list[tuple[int, int, _Account, int, bool]] = []  # (issued, seq, account, cents, monthly)
    for month_day in _MONTH_STARTS[1:]:
        t = month_day * _DAY + 2 * 3600
        uplift = 107 if month_day >= _MONTH_STARTS[18] else 100  # price increase from 2025-07
        for acct in billable:
            if acct.created < t <= acct.end:
                for price in acct.subscriptions:
                    overage = 0 if acct.plan == "starter" else int(price * random() * 0.25)
                    drafts.append((t, len(drafts), acct, price * uplift // 100 + overage, True))
                    t += 1 + int(random() * 2)
    if len(drafts) > n:  # only at odd scales: keep an evenly spread subset
        drafts = [drafts[(i * len(drafts)) // n] for i in range(n)]
    # Ad-hoc invoices (setup fees, overages, services, credit notes) fill up to n.
    weights = [
        (a.end - a.created + _DAY) * {"starter": 1.0, "growth": 2.0, "enterprise": 4.0}[a.plan] for a in billable
    ]
    for acct in rng.choices(billable, weights=weights, k=n - len(drafts)):
        cents = int(math.exp(rng.gauss(math.log(25_000), 1.1)))
        cents = min(max(cents, 500), 5_000_000)
        if random() < 0.015:
            cents = -cents  # credit note
        drafts.append((clock.between(acct.created, acct.end), len(drafts), acct, cents, False))
    drafts.sort(key=lambda d: (d[0], d[1]))

    rows = []
    year_seq: dict[str, int] = {}
    for invoice_id, (issued, _, acct, cents, _monthly) in enumerate(drafts, start=1):
        issued_s = _ts(issued)
        year = issued_s[:4]
        year_seq[year] = seq = year_seq.get(year, 0) + 1
        due_day = issued // _DAY + acct.terms
        tax_cents = (abs(cents) * acct.vat_bp + 5000) // 10000 * (1 if cents >= 0 else -1)
        tax = tax_cents / 100
        r = random()
        paid_at = None
        if r < 0.015:
            status = "void"
            tax = None
            updated = issued + int(random() * (min(issued + 5 * _DAY, _END) - issued + 1))
        else:
            if r < 0.02:
                tax = None  # tax not computed yet / exempt pending: a NULL exports must survive
            if cents < 0:
                lag_days = 0
            elif random() < 0.8:
                lag_days = int(random() * acct.terms)
            else:
                lag_days = acct.terms + 1 + int(random() * 60)
            paid = clock.in_day(issued // _DAY + lag_days)
            if paid <= issued:
                paid = issued + 30 + int(random() * 3600)
            if random() < acct.pay_prob and paid <= _END and paid <= acct.end + 60 * _DAY:
                status, paid_at, updated = "paid", _ts(paid), paid
            elif (due_day + 1) * _DAY + 6 * 3600 + 600 <= _END:
                status = "overdue"  # flagged by the nightly dunning job, the morning after the due date
                updated = (due_day + 1) * _DAY + 6 * 3600 + int(random() * 600)
            else:
                status, updated = "open", issued
        rows.append(
            (
                invoice_id,
                acct.account_id,
                f"INV-{year}-{seq:06d}",
                issued_s,
                _DATE_STRINGS[due_day],
                cents / 100,
                tax,
                acct.currency,
                status,
                paid_at,
                _ts(updated),
            )
        )
    return rows


def _make_usage_events(rng: Random, clock: _Clock, accounts: list[_Account], n: int) -> list[tuple]:
    random = rng.random
    gauss = rng.gauss
    weights = [
        (a.end - a.created + _DAY) * {"starter": 1.0, "growth": 2.5, "enterprise": 6.0}[a.plan] for a in accounts
    ]
    events = []
    metric_total = _METRIC_CUM[-1]
    for acct in rng.choices(accounts, weights=weights, k=n):
        occurred = clock.between(acct.created, acct.end)
        metric = bisect.bisect_right(_METRIC_CUM, random() * metric_total)
        if metric == 0:  # api_calls
            qty = float(int(math.exp(gauss(7.5, 1.6))) + 1)
        elif metric == 1:  # storage_gb
            qty = round(math.exp(gauss(3.0, 1.5)), 3)
        elif metric == 2:  # seats
            qty = float(1 + int(math.exp(gauss(1.8, 0.9))))
        elif metric == 3:  # compute_hours
            qty = round(math.exp(gauss(1.0, 1.2)), 2)
        elif metric == 4:  # data_transfer_gb
            qty = round(math.exp(gauss(1.5, 1.8)), 3)
        else:  # emails_sent
            qty = float(int(math.exp(gauss(5.0, 1.5))) + 1)
        if random() < 0.002:
            qty = None  # a meter reading that failed to parse
        r = random()
        if r < 0.85:
            lag = 1 + int(random() * 120)
        elif r < 0.97:
            lag = 120 + int(random() * 7200)
        else:
            lag = 3600 + int(random() * 72 * 3600)  # late arrival
        recorded = occurred + lag
        if recorded > _END:  # arrived before the end of the range, or it would not be in the warehouse yet
            recorded = occurred + int(random() * (_END - occurred + 1))
        events.append((recorded, occurred, acct.account_id, metric, qty))
    events.sort(key=lambda e: (e[0], e[1], e[2], e[3]))
    return events


# ---------------------------------------------------------------------------------------------- database

_SCHEMA = """
CREATE TABLE accounts (
    account_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    industry TEXT,
    country TEXT NOT NULL,
    plan TEXT NOT NULL CHECK (plan IN ('starter', 'growth', 'enterprise')),
    status TEXT NOT NULL CHECK (status IN ('active', 'churned', 'trial')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE contacts (
    contact_id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (account_id),
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    phone TEXT,
    role TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE loans (
    loan_id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (account_id),
    principal REAL NOT NULL,
    currency TEXT NOT NULL,
    interest_rate REAL NOT NULL,
    term_months INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'repaid', 'defaulted')),
    issued_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE invoices (
    invoice_id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (account_id),
    invoice_number TEXT NOT NULL UNIQUE,
    issued_at TEXT NOT NULL,
    due_date TEXT NOT NULL,
    amount REAL NOT NULL,
    tax REAL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('paid', 'open', 'overdue', 'void')),
    paid_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE usage_events (
    event_id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (account_id),
    metric TEXT NOT NULL,
    quantity REAL,
    occurred_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
"""

_INDEXES = """
CREATE INDEX ix_accounts_created_at ON accounts (created_at);
CREATE INDEX ix_accounts_updated_at ON accounts (updated_at);
CREATE INDEX ix_contacts_account_id ON contacts (account_id);
CREATE INDEX ix_contacts_updated_at ON contacts (updated_at);
CREATE INDEX ix_loans_account_id ON loans (account_id);
CREATE INDEX ix_loans_issued_at ON loans (issued_at);
CREATE INDEX ix_loans_updated_at ON loans (updated_at);
CREATE INDEX ix_invoices_account_id ON invoices (account_id);
CREATE INDEX ix_invoices_issued_at ON invoices (issued_at);
CREATE INDEX ix_invoices_updated_at ON invoices (updated_at);
CREATE INDEX ix_usage_events_account_id ON usage_events (account_id);
CREATE INDEX ix_usage_events_occurred_at ON usage_events (occurred_at);
CREATE INDEX ix_usage_events_recorded_at ON usage_events (recorded_at);
"""


def _scaled(table: str, scale: float) -> int:
    return max(1, round(BASE_ROW_COUNTS[table] * scale))


def demo_database_url(path: Path) -> str:
    """The SQLAlchemy URL of the demo warehouse at `path`: ``sqlite:///<absolute path>``."""
    return f"sqlite:///{Path(path).resolve()}"


def seed_demo_warehouse(path: Path, *, scale: float = 1.0) -> dict[str, int]:
    """Build the demo warehouse at `path` (replacing it atomically) and return the row count of each table.

    At ``scale=1`` the tables hold 2,000 accounts, 6,000 contacts, 3,000 loans, 150,000 invoices and 250,000
    usage events; `scale` multiplies every count (at least one row each). The same `scale` always gives the
    same rows.
    """
    if not scale > 0 or math.isinf(scale):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if tmp == path:
        tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)

    rng = Random(SEED)
    clock = _Clock(rng)
    counts = {table: _scaled(table, scale) for table in TABLES}
    accounts = _make_accounts(rng, clock, counts["accounts"])
    contacts = _make_contacts(rng, clock, accounts, counts["contacts"])
    loans = _make_loans(rng, clock, accounts, counts["loans"])
    invoices = _make_invoices(rng, clock, accounts, counts["invoices"])
    events = _make_usage_events(rng, clock, accounts, counts["usage_events"])

    def account_rows() -> Iterator[tuple]:
        for a in accounts:
            yield (a.account_id, a.name, a.industry, a.country, a.plan, a.status, _ts(a.created), _ts(a.updated))

    def contact_rows() -> Iterator[tuple]:
        for i, (created, account_id, first, last, email, phone, role, updated) in enumerate(contacts, start=1):
            yield (i, account_id, first, last, email, phone, role, _ts(created), _ts(updated))

    def loan_rows() -> Iterator[tuple]:
        for i, (issued, account_id, principal, currency, rate, term, status, updated) in enumerate(loans, start=1):
            yield (i, account_id, principal, currency, rate, term, status, _ts(issued), _ts(updated))

    def event_rows() -> Iterator[tuple]:
        for i, (recorded, occurred, account_id, metric, qty) in enumerate(events, start=1):
            yield (i, account_id, _METRICS[metric], qty, _ts(occurred), _ts(recorded))

    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("BEGIN")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany("INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", account_rows())
        conn.executemany("INSERT INTO contacts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", contact_rows())
        conn.executemany("INSERT INTO loans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", loan_rows())
        conn.executemany("INSERT INTO invoices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", invoices)
        conn.executemany("INSERT INTO usage_events VALUES (?, ?, ?, ?, ?, ?)", event_rows())
        for statement in _INDEXES.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("COMMIT")
        result = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}
    except BaseException:
        conn.close()
        tmp.unlink(missing_ok=True)
        raise
    conn.close()
    os.replace(tmp, path)
    return result
