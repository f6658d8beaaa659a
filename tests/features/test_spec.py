"""Spec parsing, validation and versioning (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyclass.errors import FeatureSpecError
from skyclass.features import Feature, FeatureSpec, Nondetection, example_spec_path, load_spec
from skyclass.features.spec import (
    BinaryOp,
    Call,
    Column,
    ExpressionError,
    Negate,
    Number,
    parse_expression,
    parse_spec,
    unparse,
)

EXAMPLE = example_spec_path("sdss_ugriz")

REFORMATTED = """
# the same spec, written differently
catalog="sdss17"   # catalog first this time
name = 'sdss_ugriz'

[[feature]]
group = "magnitudes"
expr = " u "
name = "u"
missing = "nan"          # the default, spelled out

[[feature]]
name="g" ; expr="(g)" ; group="magnitudes"
""".replace(" ; ", "\n")


def _tail(names: str) -> str:
    out = []
    for band in names.split():
        out.append(f'[[feature]]\nname = "{band}"\nexpr = "{band}"\ngroup = "magnitudes"\n')
    for a, b in ("ug", "gr", "ri", "iz"):
        out.append(
            f'[[feature]]\nexpr = "({a})-({b})"  # spaces do not matter\n'
            f'name = "{a}_{b}"\ngroup = "colours"\n'
        )
    return "\n".join(out)


def test_example_spec_reads() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.name == "sdss_ugriz" and spec.catalog == "sdss17"
    assert spec.feature_names == ["u", "g", "r", "i", "z", "u_g", "g_r", "r_i", "i_z"]
    assert spec.groups == {
        "magnitudes": ("u", "g", "r", "i", "z"),
        "colours": ("u_g", "g_r", "r_i", "i_z"),
    }
    assert len(spec.spec_hash) == 64
    assert spec.table_name == f"sdss_ugriz_{spec.spec_hash[:12]}"


def test_hash_ignores_layout_comments_key_order_and_defaults() -> None:
    original = load_spec(EXAMPLE)
    reformatted = parse_spec(REFORMATTED + "\n" + _tail("r i z"))
    assert reformatted.spec_hash == original.spec_hash
    assert reformatted.canonical() == original.canonical()
    # The same spec from Python, and its TOML rendering, have the same version too.
    features = [Feature(b, b, group="magnitudes") for b in "ugriz"]
    features += [Feature(f"{a}_{b}", f"{a} - {b}", "colours") for a, b in ("ug", "gr", "ri", "iz")]
    python = FeatureSpec("sdss_ugriz", "sdss17", tuple(features))
    assert python.spec_hash == original.spec_hash
    assert parse_spec(python.to_toml()).spec_hash == original.spec_hash
    # Equal numbers written differently are the same constant.
    a = FeatureSpec("s", "c", (Feature("f", "2.5 * u"),))
    b = FeatureSpec("s", "c", (Feature("f", "2.50e0*(u)"),))
    assert a.spec_hash == b.spec_hash


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.replace('expr = "u - g"', 'expr = "g - u"'),
        lambda s: s.replace('expr = "u - g"', 'expr = "u - g + 0"'),
        lambda s: s.replace('catalog = "sdss17"', 'catalog = "sdss18"'),
        lambda s: s.replace('name = "sdss_ugriz"', 'name = "sdss_ugriz2"'),
        lambda s: s.replace('name = "u_g"', 'name = "ug"'),
        lambda s: s.replace('group = "colours"', 'group = "colors"', 1),
        lambda s: s.replace('expr = "u - g"', 'expr = "u - g"\nmissing = "indicator"'),
        lambda s: s.replace(
            'expr = "u - g"', 'expr = "u - g"\nnondetection = { column = "u", above = 26.0 }'
        ),
        # order of features is the order of the model inputs
        lambda s: (
            s.replace('name = "u"\nexpr = "u"', 'name = "tmp"\nexpr = "g"', 1)
            .replace('name = "g"\nexpr = "g"', 'name = "u"\nexpr = "u"', 1)
            .replace('name = "tmp"\nexpr = "g"', 'name = "g"\nexpr = "g"', 1)
        ),
    ],
)
def test_hash_changes_with_meaning(change: object) -> None:
    text = EXAMPLE.read_text()
    changed = change(text)  # type: ignore[operator]
    assert changed != text
    assert parse_spec(changed).spec_hash != load_spec(EXAMPLE).spec_hash


def test_parser_and_canonical_text() -> None:
    tree = parse_expression("a - (b - c) * 2.50e0 / -x")
    assert tree == BinaryOp(
        "-",
        Column("a"),
        BinaryOp(
            "/",
            BinaryOp("*", BinaryOp("-", Column("b"), Column("c")), Number(2.5)),
            Negate(Column("x")),
        ),
    )
    assert unparse(tree) == "a - (b - c) * 2.5 / -x"
    # Floating-point addition is not associative: the grouping is kept.
    assert unparse(parse_expression("a + (b + c)")) == "a + (b + c)"
    assert unparse(parse_expression("(a + b) + c")) == "a + b + c"
    assert unparse(parse_expression("-(-u)")) == "-(-u)"
    assert parse_expression("flux_to_mag(f, 22.5)") == Call(
        "flux_to_mag", (Column("f"), Number(22.5))
    )
    for text in ("log10(u / g)", "ln(abs(u))", "sqrt(u) * 1e-3", "mag_to_flux(u, 8.9) + .5"):
        tree = parse_expression(text)
        assert parse_expression(unparse(tree)) == tree


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("u; DROP TABLE x", "unexpected character ';'"),
        ("__import__('os')", 'unexpected character "\'"'),
        ("__import__(u)", "unknown function '__import__'"),
        ("exp(u)", "unknown function 'exp'"),
        ("pg_sleep(10)", "unknown function 'pg_sleep'"),
        ('u" || pg_sleep(1) || "', "unexpected character '\"'"),
        ("u $$ g", "unexpected character '$'"),
        ("u\x00", "unexpected character '\\x00'"),
        ("u ** 2", "expected a column, number or '('"),
        ("u g", "unexpected 'g'"),
        ("log10(u, g)", "takes 1 argument, not 2"),
        ("(u", "expected ')'"),
        ("", "empty"),
        ("1e999", "out of range"),
        ("u." + "0" * 600, "longer than 500"),
        ("(" * 200 + "u" + ")" * 200, "nested too deeply"),
        ("+".join(["u"] * 30), "nested more than 16"),
        ("u::text", "unexpected character ':'"),
        ("u /* c */", "expected a column"),
        ("u -- c", None),  # u - (-c): the column c is then checked against the catalog
        ("U", None),  # syntax is fine; the column check happens against the catalog
    ],
)
def test_expression_allowlist(expr: str, message: str | None) -> None:
    if message is None:
        parse_expression(expr)
        return
    with pytest.raises(ExpressionError) as info:
        parse_expression(expr)
    assert message in str(info.value)


def _spec_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(body)
    return path


HEADER = 'name = "s"\ncatalog = "sdss17"\n\n[[feature]]\nname = "u"\nexpr = "u"\n\n'


@pytest.mark.parametrize(
    ("body", "line", "fragment"),
    [
        # line 9 is the name of the second feature
        ('[[feature]]\n# comment\nname = "bad"\nexpr = "u; DROP TABLE x"\n', 10, "';'"),
        ('[[feature]]\nname = "bad"\nexpr = "exp(u)"\n', 9, "unknown function 'exp'"),
        ('[[feature]]\nname = "bad"\nexpr = "__import__(\'os\')"\n', 9, "unexpected character"),
        ('[[feature]]\nname = "bad"\nexpr = "u\\u0000"\n', 9, "'\\x00'"),
        (f'[[feature]]\nname = "{"n" * 64}"\nexpr = "u"\n', 9, "longer than 63 bytes"),
        ('[[feature]]\nname = "a$$b"\nexpr = "u"\n', 9, "is not allowed"),
        ('[[feature]]\nname = "Bad"\nexpr = "u"\n', 9, "is not allowed"),
        ('[[feature]]\nname = "u"\nexpr = "g"\n', 9, "used twice"),
        ('[[feature]]\nname = "x"\nexpresion = "g"\n', 9, "did you mean expr"),
        ('[[feature]]\nname = "x"\nexpr = "g"\nmissing = "zero"\n', 9, "missing = 'zero'"),
        ('[[feature]]\nname = "x"\nexpr = 3\n', 9, "expr must be a string"),
        (
            '[[feature]]\nname = "x"\nexpr = "g"\nnondetection = { column = "g" }\n',
            9,
            "exactly one of above and below",
        ),
        (
            '[[feature]]\nname = "x"\nexpr = "g"\nnondetection = { flag = "f", above = 1 }\n',
            9,
            "takes no above/below",
        ),
        (
            '[[feature]]\nname = "x"\nexpr = "g"\nmissing = "indicator"\n[[feature]]\n'
            'name = "x_missing"\nexpr = "u"\n',
            13,
            "used twice",
        ),
        ('[[feature]]\nname = "x"\nexpr = "g" = 1\n', 10, "not valid TOML"),
        ('[[feature]]\nname = "x"\nexpr = "g\x00"\n', 10, "not valid TOML"),
    ],
)
def test_bad_specs_name_file_and_line(tmp_path: Path, body: str, line: int, fragment: str) -> None:
    path = _spec_file(tmp_path, HEADER + body)
    with pytest.raises(FeatureSpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line {line}: "), message
    assert fragment in message
    assert info.value.line == line and info.value.path == str(path)


@pytest.mark.parametrize(
    ("top", "line", "fragment"),
    [
        ('name = "s"\ncatalog = "sdss17; DROP TABLE x"\n', 2, "catalog name"),
        ('name = "x\'); DROP TABLE y; --"\ncatalog = "sdss17"\n', 1, "feature set name"),
        (f'name = "{"s" * 51}"\ncatalog = "sdss17"\n', 1, "longer than 50 bytes"),
        ('name = "s"\ncatalog = "sdss17"\ndescription = "x"\n', 3, "unknown key 'description'"),
    ],
)
def test_bad_top_level_keys(tmp_path: Path, top: str, line: int, fragment: str) -> None:
    path = _spec_file(tmp_path, top + '\n[[feature]]\nname = "u"\nexpr = "u"\n')
    with pytest.raises(FeatureSpecError) as info:
        load_spec(path)
    assert f"line {line}:" in str(info.value) and fragment in str(info.value)


def test_python_api_is_checked_too() -> None:
    spec = FeatureSpec("s", "sdss17", (Feature("ok", "u - g"), Feature("bad", "u; x")))
    with pytest.raises(FeatureSpecError, match="feature 'bad'"):
        _ = spec.spec_hash
    nd = Nondetection(column="u", above=26.0, mask=True)
    spec = FeatureSpec("s", "sdss17", (Feature("u", "u", missing="indicator", nondetection=nd),))
    assert spec.feature_names == ["u", "u_missing", "u_nondet"]
    assert spec.groups == {"u": ("u", "u_missing", "u_nondet")}
    assert parse_spec(spec.to_toml()).spec_hash == spec.spec_hash
    with pytest.raises(FeatureSpecError, match="no example spec"):
        example_spec_path("nope")
    with pytest.raises(FeatureSpecError, match="cannot read"):
        load_spec("/nonexistent/spec.toml")
