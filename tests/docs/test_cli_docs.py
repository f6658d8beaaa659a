"""docs/cli.md is the generated reference of the command line, and every command is documented.

The reference is regenerated from the click tree and compared with the
committed file: a new, renamed or changed command or option fails here until
``make docs`` is run. Every command needs a help text and every option a help
string, since the reference (and ``--help``) is all a newcomer reads.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import click

from skyclass.cli import main
from skyclass.docs_cli import help_text, iter_commands, render

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_cli_md_is_up_to_date() -> None:
    expected = render()
    actual = CLI_MD.read_text(encoding="utf-8") if CLI_MD.exists() else ""
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                actual.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                "docs/cli.md (committed)",
                "docs/cli.md (generated)",
                n=1,
            )
        )
        raise AssertionError(
            "docs/cli.md is out of date with the commands' --help: run `make docs` "
            f"and commit the result.\n{diff[:4000]}"
        )


def test_every_command_and_option_has_help() -> None:
    missing: list[str] = []
    commands = list(iter_commands(main, ("skyclass",)))
    assert len(commands) > 20
    for path, command, ctx in commands:
        name = " ".join(path)
        if not help_text(command):
            missing.append(f"{name}: no help text")
        for param in command.get_params(ctx):
            if isinstance(param, click.Option) and not param.hidden and not (param.help or ""):
                missing.append(f"{name} {param.opts[0]}: no help string")
    assert not missing, "undocumented commands/options:\n" + "\n".join(missing)


def test_every_command_has_a_section() -> None:
    text = CLI_MD.read_text(encoding="utf-8")
    for path, _command, _ctx in iter_commands(main, ("skyclass",)):
        assert f"## `{' '.join(path)}`\n" in text


def test_render_walks_nested_groups() -> None:
    @click.group()
    def root() -> None:
        """Root | with a pipe."""

    @root.group()
    def sub() -> None:
        """A subgroup.

        \b
        kept as is
        \f
        hidden from the help
        """

    @sub.command()
    @click.option("--size", type=click.Choice(["a", "b"]), default="a", help="Size a|b.")
    @click.argument("name")
    def leaf(size: str, name: str) -> None:
        """The leaf."""

    text = render(root, prog="demo")
    assert "## `demo sub leaf`" in text
    assert "Usage: demo sub leaf [OPTIONS] NAME" in text
    assert "| `--size` | option | a \\| b | `a` |  | Size a\\|b. |" in text
    assert "hidden from the help" not in text
    assert "\b" not in text
    assert "kept as is" in text
