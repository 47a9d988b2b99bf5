"""canonical_json's fast path writes exactly what the reference `rfc8785.dumps` writes.

Seeded random documents (reproducible: a failure names its seed), hand-picked edge cases, and
every evidence record of the test stores are compared byte for byte; inputs RFC 8785 refuses
raise the same error through both.
"""

from __future__ import annotations

import math
import random
import struct
import sys
from typing import Any

import pytest
import rfc8785

from audit.api import collect, make_selection
from audit.evidence import canonical_json, sha256_hex
from tests.conftest import Store

TRICKY_FLOATS = [
    0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 0.1, 0.1 + 0.2, 1 / 3, -2 / 3, 100.0, 1e15, 1e16, 1e17,
    1e20, 1e21, 1e22, 1e-5, 1e-6, 1e-7, 1e-8, 0.000001, 0.0000012345, 0.00001234,
    123456789012345680000.0, 12345678901234567.0, 9007199254740991.0, 9007199254740992.0,
    -9007199254740991.0, -9007199254740993.0, 4503599627370496.5, 5e-324, -5e-324,
    2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308, 1.5e300,
    333333333.3333333, 1e-300, 0.0001, 0.001, 123.456, 8.404699593400622e-06, 1e308,
    295147905179352830000.0, 4.35, 0.7054106273239699, 1e23, 5e-7, 1.2e-6, 9.999999999999999e20,
    1e21 - 65536, 100000000000000000000.0,
]  # fmt: skip

TRICKY_STRINGS = [
    "", "a", '"', "\\", "\\\"", "/", "\b\f\n\r\t", "\x00\x01\x1f", "\x7f", "\x80\x9f",
    "\u2028\u2029", "é", "naïve — 東京 — \u202eevil", "\ufeff", "\uffff", "\ue000",
    "\U0001f600", "\U0010ffff", "a\U0001f600b", "<script>&amp;</script>", "\u0000end",
    "tab\tand\nnewline", "€", "\ud7ff",
]  # fmt: skip

_SAFE = 2**53 - 1


def same(value: Any) -> None:
    """Both serialisations agree: the same bytes, or the same error."""
    try:
        expected = rfc8785.dumps(value)
    except Exception as error:  # whatever the reference raises
        with pytest.raises(type(error)) as raised:
            canonical_json(value)
        assert str(raised.value) == str(error)
        return
    assert canonical_json(value) == expected, repr(value)[:500]


# --------------------------------------------------------------------------- generators


def random_float(rng: random.Random) -> float:
    choice = rng.random()
    if choice < 0.3:
        # any finite double, uniformly over its bits
        while True:
            value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            if math.isfinite(value):
                return float(value)
    if choice < 0.6:
        # around the places where ECMAScript and Python switch notation
        return rng.choice([-1, 1]) * rng.random() * 10.0 ** rng.randint(-9, 24)
    if choice < 0.8:
        return float(rng.randint(-(2**60), 2**60)) / rng.choice([1, 1, 2, 10, 1000])
    return rng.choice(TRICKY_FLOATS)


def random_string(rng: random.Random, *, max_length: int = 12) -> str:
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./ ",
        '"\\\b\f\n\r\t\x00\x01\x1f\x7f/',
        "éü東京\u2028\u2029\u202e\ufeff\ue000\uffff\ud7ff€",
        "\U0001f600\U00010000\U0010ffff\U0001d11e",
    ]
    weights = [8, 2, 2, 1]
    return "".join(
        rng.choice(rng.choices(pools, weights)[0]) for _ in range(rng.randint(0, max_length))
    )


def random_int(rng: random.Random) -> int:
    return rng.choice(
        [
            rng.randint(-1000, 1000),
            rng.randint(-_SAFE, _SAFE),
            rng.choice([_SAFE, -_SAFE, 0, 1, -1]),
        ]
    )


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "float", "bool", "none"]
    if depth < 4:
        kinds += ["dict", "list", "dict", "list"]
    kind = rng.choice(kinds)
    if kind == "str":
        return random_string(rng)
    if kind == "int":
        return random_int(rng)
    if kind == "float":
        return random_float(rng)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {random_string(rng, max_length=6): random_value(rng, depth + 1) for _ in range(6)}


# --------------------------------------------------------------------------- cases


@pytest.mark.parametrize("value", TRICKY_FLOATS, ids=repr)
def test_tricky_floats(value: float) -> None:
    same(value)
    same(-value)
    same([value, {"v": value}])


def test_ecmascript_number_forms() -> None:
    # The spellings RFC 8785 (ECMAScript Number::toString) asks for, for the record.
    assert canonical_json([1e21, 1e-7, 0.000001, -0.0, 1e16, 2.0, 5e-324]) == (
        b"[1e+21,1e-7,0.000001,0,10000000000000000,2,5e-324]"
    )
    assert canonical_json(123456789012345680000.0) == b"123456789012345680000"
    assert canonical_json(1.7976931348623157e308) == b"1.7976931348623157e+308"
    assert canonical_json(0.1 + 0.2) == b"0.30000000000000004"


@pytest.mark.parametrize("seed", range(40))
def test_random_floats(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    values = [random_float(rng) for _ in range(250)]
    for value in values:
        same(value)
    same(values)
    same({"metrics": [{"value": value} for value in values]})


@pytest.mark.parametrize("text", TRICKY_STRINGS, ids=repr)
def test_tricky_strings(text: str) -> None:
    same(text)
    same({text: text, "k": [text]})


def test_every_control_character_and_more() -> None:
    text = "".join(chr(c) for c in range(0x300))
    same(text)
    same({chr(c): c for c in range(0x300)})


def test_keys_sort_by_utf16_code_units() -> None:
    # U+E000..U+FFFF sort after non-BMP characters in UTF-16 (surrogates are 0xD800..0xDFFF),
    # before them in code points: the fast path must not decide this order.
    keys = ["\ue000", "\uffff", "\U0001f600", "\U00010000", "a", "", "\ud7ff", "z\U0001f600"]
    value = {key: index for index, key in enumerate(keys)}
    same(value)
    assert canonical_json(value) == rfc8785.dumps(value)
    # through each writer, nested
    for extra in (0.5, 2.0, 1e-7):
        same({"x": [{**value, "f": extra}], "\ue000": extra, "\U0001f600": extra})
    # non-BMP characters in values only keep the fast path's order
    same({"b": "\U0001f600", "a": ["\U0010ffff"]})


@pytest.mark.parametrize(
    "value",
    [
        2**53 - 1, -(2**53) + 1, 2**53, -(2**53), 2**64, -(2**70), [1, 2**53], {"a": {"b": 2**60}},
        True, False, None, [], {}, [[]], [{}], {"a": []}, (1, 2.0, "x"), [True, 1, 1.0, "1"],
    ],
    ids=repr,
)  # fmt: skip
def test_integers_and_literals(value: Any) -> None:
    same(value)


@pytest.mark.parametrize(
    "value",
    [
        math.nan, math.inf, -math.inf, [1.0, math.nan], {"a": math.inf},  # no NaN/Infinity
        {1: "a"}, {"a": 1, 2: "b"}, {None: 1}, {(1, 2): 3},  # keys must be strings
        {1, 2}, b"bytes", object(), {"a": frozenset()},  # not JSON
        "\ud800", {"\udfff": 1}, ["ok", "lone \udc00 surrogate"],  # not UTF-8
    ],
    ids=lambda value: "object()" if type(value) is object else repr(value),  # stable ids
)  # fmt: skip
def test_what_rfc8785_refuses_fails_the_same_way(value: Any) -> None:
    same(value)


def test_subclasses_are_written_as_their_base_type() -> None:
    class Text(str):
        pass

    class Number(int):
        pass

    class Real(float):
        pass

    class Table(dict):  # type: ignore[type-arg]
        pass

    same([Text("a\n"), Number(3), Real(2.0), Real(0.5), Table(b=1, a=Text("x")), True])


def test_deep_nesting() -> None:
    value: Any = 1.0
    for index in range(200):
        value = [value] if index % 2 else {"k": value}
    same(value)
    deeper: Any = "x"
    for _ in range(sys.getrecursionlimit() // 4):
        deeper = [deeper]
    same(deeper)


@pytest.mark.parametrize("seed", range(300))
def test_random_documents(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    same({random_string(rng, max_length=8): random_value(rng) for _ in range(8)})
    same([random_value(rng) for _ in range(5)])


def test_the_input_is_not_changed() -> None:
    record = {"metrics": [{"value": 2.0}, {"value": 1e-7}], "n": 3}
    canonical_json(record)
    assert record == {"metrics": [{"value": 2.0}, {"value": 1e-7}], "n": 3}
    assert type(record["metrics"][0]["value"]) is float  # type: ignore[index]


# --------------------------------------------------------------------------- real records


def _store_records(uri: str) -> list[dict[str, Any]]:
    chosen = make_selection(include_deleted=True)
    return [dict(c.record) for c in collect(uri, selection=chosen)]


def test_every_record_of_the_test_stores(sqlite_store: Store, demo_store: Store) -> None:
    every = _store_records(sqlite_store.uri) + _store_records(demo_store.uri)
    assert len(every) >= 15
    for record in every:
        assert canonical_json(record) == rfc8785.dumps(record), record["run"]["name"]
        # and with the shapes real metrics take that the stores may not have
        for value in (2.0, 1e-7, 1e21, -0.0, 8.404699593400622e-06):
            variant = {**record, "metrics": [*record["metrics"], {"key": "x", "value": value}]}
            assert canonical_json(variant) == rfc8785.dumps(variant)


def test_digest_is_sha256_of_the_reference_form(sqlite_store: Store) -> None:
    import hashlib

    for record in _store_records(sqlite_store.uri):
        assert sha256_hex(record) == hashlib.sha256(rfc8785.dumps(record)).hexdigest()


def test_each_way_of_writing_is_exercised() -> None:
    # The cases above go through all three writers; this pins which one each shape takes.
    from audit.evidence import _FALLBACK, _FIX, _FLOAT, _scan

    assert _scan({"a": [1, "x", None, True, 0.5, {"b": 1e15 + 0.5}]}) == 0
    assert _scan({"a": [2.0, -0.0]}) == _FIX
    assert _scan({"a": [2.0, 1e-7]}) == _FIX | _FLOAT
    assert _scan([1e16, 1e21, 5e-324]) == _FLOAT
    for value in (2**53, math.nan, {1: 2}, Real(1.5), {"a": {1, 2}}):
        assert _scan(value) & _FALLBACK, value


class Real(float):
    pass
