"""Regenerate the option tables of docs/cli.md from the click definitions in cli.py.

    .venv/bin/python docs/gen_cli.py          # rewrite docs/cli.md in place
    .venv/bin/python docs/gen_cli.py --check  # exit 1 if docs/cli.md is stale

Only the text between ``<!-- BEGIN GENERATED: reactor NAME -->`` and
``<!-- END GENERATED: reactor NAME -->`` changes; the prose around it is hand-written.
tests/cli/test_docs.py fails when the file is stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
from mioreactor import cli

ROOT = Path(__file__).resolve().parents[1]

DOC = ROOT / "docs" / "cli.md"
BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: reactor (\w+) -->\n).*?(<!-- END GENERATED: reactor \2 -->)",
    re.S,
)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(param: click.Option) -> str:
    if isinstance(param.show_default, str):
        return param.show_default
    if param.is_flag and not param.secondary_opts:
        return "off"
    if param.secondary_opts:
        on, off = param.opts[0], param.secondary_opts[0]
        return on if param.default else off
    if param.default in (None, (), ""):
        return "none"
    return f"`{param.default}`"


def _kind(param: click.Option, ctx: click.Context) -> str:
    """``integer >=1``, ``seconds``-style type names; choices as ``a \\| b``."""
    kind = param.type.get_metavar(param, ctx) or param.type.name
    describe = getattr(param.type, "_describe_range", None)
    if describe is not None:
        kind = f"{kind.replace(' range', '')} {describe()}"
    return _cell(kind)


def _envvar(command: click.Command, param: click.Parameter) -> str:
    if isinstance(param.envvar, str):
        return param.envvar
    if not isinstance(param, click.Option):
        return ""
    group = click.Context(cli.reactor, info_name="reactor", auto_envvar_prefix="REACTOR")
    ctx = click.Context(command, info_name=command.name, parent=group,
                        **(command.context_settings or {}))
    assert param.name is not None
    return f"{ctx.auto_envvar_prefix}_{param.name.upper()}"


def table(name: str) -> str:
    """The Markdown reference of ``reactor NAME``: usage, arguments, options."""
    command = cli.reactor.commands[name]
    ctx = click.Context(command, info_name=f"reactor {name}")
    lines = [f"```\n{command.get_usage(ctx)}\n```", ""]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    for arg in arguments:
        required = "required" if arg.required else "optional"
        env = _envvar(command, arg)
        lines.append(f"Argument `{arg.human_readable_name}` ({required})"
                     + (f", env var `{env}`." if env else "."))
        lines.append("")
    lines += ["| Option | Type | Default | Env var | Description |",
              "|---|---|---|---|---|"]
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        kind = "flag" if param.is_flag else _kind(param, ctx)
        lines.append(f"| {names} | {kind} | {_cell(_default(param))} | "
                     f"`{_envvar(command, param)}` | {_cell(param.help or '')} |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """``text`` (docs/cli.md) with every generated block rewritten."""
    return BLOCK.sub(lambda m: m.group(1) + table(m.group(2)) + m.group(3), text)


def main() -> int:
    current = DOC.read_text()
    fresh = render(current)
    if "--check" in sys.argv[1:]:
        if fresh != current:
            print("docs/cli.md is stale: run .venv/bin/python docs/gen_cli.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
