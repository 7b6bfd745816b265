"""The problem-path engine (`mtpoold._validation`): one way to say what is wrong, two dialects."""

from __future__ import annotations

import attrs
import cattrs.preconf.tomllib

from mtpoold._validation import EXPECT, JSON, SECRET, TOML, FieldProblem, Structurer


def _small(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value > 9:
        raise FieldProblem(attr.name, f"expected an integer <= 9, got {value}")


@attrs.frozen
class _Inner:
    ids: tuple[int, ...] = attrs.field(validator=attrs.validators.deep_iterable(_small))
    token: str = attrs.field(default="", metadata={SECRET: True})
    port: int = attrs.field(default=1, metadata={EXPECT: "an integer 1..65535"})


@attrs.frozen
class _Outer:
    inner: _Inner


def _lines(structurer: Structurer, value: object) -> list[str]:
    try:
        structurer.converter.structure(value, _Outer)
    except Exception as exc:
        return list(structurer.problems_from(exc, "params"))
    return []


def test_both_dialects_name_the_key_path_the_same_way() -> None:
    doc = {"inner": {"ids": [1, "x"], "token": 5, "port": "80a", "extra": 1}}
    toml = Structurer(TOML, cattrs.preconf.tomllib.make_converter)
    assert _lines(toml, doc) == [
        "params.inner.extra: unknown key",
        'params.inner.ids[1]: expected an integer, got "x"',
        "params.inner.token: expected a string, got an integer",  # a secret: its kind only
        'params.inner.port: expected an integer 1..65535, got "80a"',
    ]
    assert _lines(Structurer(JSON), doc) == [
        "params.inner.extra: unknown parameter; expected ids, port, token",
        "params.inner.ids[1]: expected an integer, got a string",  # strings never echoed
        "params.inner.token: expected a string, got a number",
        "params.inner.port: expected an integer 1..65535, got a string",
    ]


def test_first_problem_runs_the_validators() -> None:
    obj, problem = Structurer(JSON).first_problem({"inner": {"ids": [1, 12]}}, _Outer, "params")
    assert (obj, problem) == (None, "params.inner.ids: expected an integer <= 9, got 12")
    assert Structurer(JSON).first_problem({"inner": {"ids": [3]}}, _Outer, "params") == (
        _Outer(_Inner(ids=(3,))),
        None,
    )


def test_numbers_beyond_64_bits_are_described_not_printed() -> None:
    assert JSON.show(10**400) == "an integer of 1329 bits"
    assert JSON.show(float("inf")) == "a number beyond 1.8e308"
    assert TOML.show(0.0) == "0"
    assert TOML.show(True) == "true" and JSON.show(True) == "a boolean"


def test_did_you_mean_names_the_closest_known_name_only() -> None:
    from mtpoold._validation import did_you_mean

    assert did_you_mean("capacty", ["capacity", "interval_s"]) == "; did you mean capacity?"
    assert did_you_mean("proxys", ["daemon", "proxies", "accounts"]) == "; did you mean proxies?"
    assert did_you_mean("bogus", ["capacity", "interval_s"]) == ""
    assert did_you_mean("capacity", ["capacity"]) == ""  # not a misspelling
    assert did_you_mean("GETHISTRY", ["GetHistory"], fold_case=True) == "; did you mean GetHistory?"
    assert did_you_mean("GETHISTRY", ["GetHistory"]) == ""
    assert did_you_mean("ab", ["ab", "ac", "ad"]) == ""  # 2 letters: nothing is close enough
    assert did_you_mean("x" * 65, ["x" * 64]) == ""  # a key is not a document


def test_a_misspelt_toml_key_says_which_one_was_meant() -> None:
    doc = {"inner": {"ids": [1], "prot": 2}}
    toml = Structurer(TOML, cattrs.preconf.tomllib.make_converter)
    assert _lines(toml, doc) == ["params.inner.prot: unknown key; did you mean port?"]
    # JSON-RPC lists every parameter instead
    assert _lines(Structurer(JSON), doc) == [
        "params.inner.prot: unknown parameter; expected ids, port, token"
    ]
