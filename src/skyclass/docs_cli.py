"""Markdown reference of the ``skyclass`` command line, generated from the click tree.

``docs/cli.md`` is this module's output (``make docs`` or ``python -m
skyclass.docs_cli docs/cli.md``): one section per command and subcommand with
its usage line, its help text and a table of its arguments and options. The
test suite regenerates it and fails when the committed file differs, so a
command cannot change or appear without its reference changing too.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import click

HEADER = """\
# Command-line reference

<!-- Generated from `skyclass --help` by skyclass.docs_cli: run `make docs`, do not edit. -->

Every command accepts `-h`/`--help`. Commands talk to the database named by
`SKYCLASS_DATABASE_URL`, or to the embedded cluster when it is not set (see
`skyclass db`). Known errors print one `error: ...` line and exit with status 1.
"""


def iter_commands(
    command: click.Command, path: tuple[str, ...], parent: click.Context | None = None
) -> Iterator[tuple[tuple[str, ...], click.Command, click.Context]]:
    """Walk a click command tree depth-first, commands of a group in name order.

    Parameters
    ----------
    command
        The root command (usually :data:`skyclass.cli.main`).
    path
        The words that invoke ``command`` (``("skyclass",)`` for the root).
    parent
        The click context of the parent command, so usage lines show the full path.

    Yields
    ------
    tuple
        ``(path, command, context)`` for ``command`` and then every subcommand.
    """
    ctx = click.Context(command, info_name=path[-1], parent=parent)
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from iter_commands(sub, (*path, name), ctx)


def help_text(command: click.Command) -> str:
    """The full help text of a command as click shows it, without click's markup.

    Parameters
    ----------
    command
        A click command.

    Returns
    -------
    str
        The docstring or ``help=`` text, dedented, cut at click's ``\\f`` marker, with the
        ``\\b`` no-rewrap markers removed; empty when the command has none.
    """
    text = inspect.cleandoc(command.help or "").split("\f", 1)[0]
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


def _cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _param_rows(command: click.Command, ctx: click.Context) -> list[str]:
    """Table rows (Markdown) for the arguments and options of one command."""
    rows: list[str] = []
    help_option = command.get_help_option(ctx)
    for param in command.get_params(ctx):
        if param is help_option:
            continue
        if isinstance(param, click.Argument):
            kind = "argument"
            names = f"`{param.make_metavar(ctx)}`"
            help_ = ""
        elif isinstance(param, click.Option):
            if param.hidden:
                continue
            kind = "option"
            names = ", ".join(f"`{n}`" for n in (*param.opts, *param.secondary_opts))
            help_ = param.help or ""
        else:  # pragma: no cover - click has only these two
            continue
        type_ = "flag" if isinstance(param, click.Option) and param.is_flag else param.type.name
        if isinstance(param.type, click.Choice):
            type_ = " | ".join(str(c) for c in param.type.choices)
        default = param.get_default(ctx, call=False)
        shown = ""
        # click >= 8.3 reports "no default" as its own sentinel object, not None.
        unset = default is None or type(default).__module__.startswith("click")
        if (
            not unset
            and not callable(default)
            and not (isinstance(param, click.Option) and param.is_flag and default is False)
        ):
            shown = f"`{default}`" if not isinstance(default, (list, tuple)) or default else ""
        required = "yes" if param.required else ""
        rows.append(
            f"| {names} | {kind} | {_cell(type_)} | {_cell(shown)} | {required} | {_cell(help_)} |"
        )
    return rows


def render(root: click.Command | None = None, prog: str = "skyclass") -> str:
    """Render the Markdown reference of a click command tree.

    Parameters
    ----------
    root
        The root command; :data:`skyclass.cli.main` when None.
    prog
        The program name shown in headings and usage lines.

    Returns
    -------
    str
        The whole ``docs/cli.md`` text, ending with one newline.
    """
    if root is None:
        from skyclass.cli import main

        root = main
    parts = [HEADER]
    for path, command, ctx in iter_commands(root, (prog,)):
        title = " ".join(path)
        pieces = " ".join(command.collect_usage_pieces(ctx))
        parts.append(f"## `{title}`\n")
        parts.append(f"```text\nUsage: {ctx.command_path} {pieces}\n```\n")
        text = help_text(command)
        if text:
            parts.append(text + "\n")
        rows = _param_rows(command, ctx)
        if rows:
            parts.append(
                "| name | kind | type | default | required | help |\n"
                "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
            )
        if isinstance(command, click.Group):
            subs = sorted(command.list_commands(ctx))
            listed = []
            for name in subs:
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    anchor = "-".join((*path, name))
                    listed.append(
                        f"- [`{' '.join((*path, name))}`](#{anchor}): "
                        f"{_cell(sub.get_short_help_str(limit=200))}"
                    )
            if listed:
                parts.append("Commands:\n\n" + "\n".join(listed) + "\n")
    return "\n".join(parts).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the reference to the file named on the command line (stdout without one).

    Parameters
    ----------
    argv
        Command-line arguments after the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        The exit status (0).
    """
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
