"""FilePattern (the import's file-name wildcard) and check_file_name (which names from outside are refused)."""

from __future__ import annotations

import pytest

from connector_pipelines.imports.files import FilePattern, check_file_name

MATCHES = [
    # pattern, name, matches
    ("Conversions_202?_*.csv", "Conversions_2024_01.csv", True),
    ("Conversions_202?_*.csv", "Conversions_2025_x.csv", True),
    ("Conversions_202?_*.csv", "Conversions_2019_a.csv", False),
    ("Conversions_202?_*.csv", "other.csv", False),
    ("Conversions_202?_*.csv", "Conversions_2024_.csv", True),  # `*` also matches nothing
    ("Conversions_202?_*.csv", "Conversions_202_01.csv", False),  # `?` is exactly one character
    ("Conversions_202?_*.csv", "Conversions_20244_01.csv", False),
    ("Conversions_202?_*.csv", "conversions_2024_01.csv", False),  # case-sensitive
    ("Conversions_202?_*.csv", "Conversions_2024_01.CSV", False),
    ("Conversions_202?_*.csv", "Conversions_2024_01.csv.part", False),  # the whole name must match
    ("Conversions_202?_*.csv", "x_Conversions_2024_01.csv", False),
    ("*", "anything at all.txt", True),
    ("*.csv", ".hidden.csv", True),  # unlike a shell, `*` matches a leading dot too
    ("?", "ä", True),  # one character, not one byte
    ("?", "ab", False),
    ("*.csv", "a.csv", True),
    ("*.csv", "acsv", False),  # `.` is literal, not "any character"
    ("a.c", "abc", False),
    ("[ab].csv", "[ab].csv", True),  # brackets are literal, unlike fnmatch
    ("[ab].csv", "a.csv", False),
    ("report (1)+$^.csv", "report (1)+$^.csv", True),  # regex characters are literal
    ("report (1)+$^.csv", "report 1.csv", False),
    ("a*b*c", "a-x-b-y-c", True),
    ("a*b*c", "a-x-c", False),
    ("*.csv", "dir/a.csv", False),  # a path never matches
    ("*.csv", "dir\\a.csv", False),
    ("line*", "line\nbreak", True),  # `*` is any character, a newline included
]


@pytest.mark.parametrize(("pattern", "name", "expected"), MATCHES)
def test_pattern_semantics(pattern, name, expected):
    assert FilePattern(pattern).matches(name) is expected


def test_filtering_a_listing():
    names = ["Conversions_2024_01.csv", "Conversions_2025_x.csv", "Conversions_2019_a.csv", "other.csv"]
    pattern = FilePattern("Conversions_202?_*.csv")
    assert [name for name in names if pattern.matches(name)] == ["Conversions_2024_01.csv", "Conversions_2025_x.csv"]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "is empty"),
        ("in/*.csv", "path separator"),
        ("in\\*.csv", "path separator"),
        ("/*.csv", "path separator"),
        ("..", "'..'"),
        ("../*.csv", "path separator"),
        ("*..csv", "'..'"),
    ],
)
def test_refused_patterns(pattern, message):
    with pytest.raises(ValueError, match=message) as refused:
        FilePattern(pattern)
    assert repr(pattern) in str(refused.value)


def test_patterns_compare_by_text_and_show_it():
    assert FilePattern("a*.csv") == FilePattern("a*.csv")
    assert FilePattern("a*.csv") != FilePattern("b*.csv")
    assert repr(FilePattern("a*.csv")) == "FilePattern(pattern='a*.csv')"
    with pytest.raises(AttributeError):
        FilePattern("a*.csv").pattern = "b"  # frozen: the compiled regex cannot drift from the text


@pytest.mark.parametrize(
    "name",
    [
        "Conversions_2024_01.csv",
        ".hidden.csv",  # dot files are legitimate names; only '..' at the start is refused
        "a..b.csv",
        "with space and ümlaut.csv",
        "x" * 255,
        "é" * 127,  # 254 bytes
    ],
)
def test_acceptable_names(name):
    assert check_file_name(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("../x.csv", "path separator"),
        ("a/b.csv", "path separator"),
        ("/etc/passwd", "path separator"),
        ("a\\b.csv", "path separator"),
        ("..\\x.csv", "path separator"),
        (".", "names a folder"),
        ("..", "names a folder"),
        ("..x.csv", "starts with '..'"),
        ("...", "starts with '..'"),
        ("a\x00b.csv", "U+0000"),
        ("a\nb.csv", "U+000A"),
        ("a\rb.csv", "U+000D"),
        ("tab\there.csv", "U+0009"),
        ("del\x7f.csv", "U+007F"),
        ("c1\x85.csv", "U+0085"),
        ("x" * 256, "256 bytes"),
        ("é" * 128, "256 bytes"),  # 128 characters, but 256 bytes
        ("bad\udcff.csv", "not valid UTF-8"),  # an undecodable byte, as os.fsdecode leaves it
    ],
)
def test_refused_names(name, reason):
    problem = check_file_name(name)
    assert problem is not None and reason in problem
