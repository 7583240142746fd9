"""MkDocs hook: replace the marker in reference/cli.md by the help of every ``modelproof`` command.

The text comes from the (click) command tree typer builds, so the reference cannot drift from the code.
"""

from __future__ import annotations

MARKER = "<!-- modelproof-cli-reference -->"


def _command_markdown(command, path: list[str], level: int) -> list[str]:
    ctx = command.context_class(command, info_name=" ".join(path))
    out = [f"{'#' * level} `{' '.join(path)}`", ""]
    help_text = (command.help or "").strip()
    if help_text:
        out += [help_text.split("\b")[0].strip(), ""]
    out += ["```text", command.get_usage(ctx).strip(), "```", ""]
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, text = record
        rows.append(f"| `{names}` | {text.replace('|', '/').replace(chr(10), ' ')} |")
    if rows:
        out += ["| option | meaning |", "|---|---|", *rows, ""]
    if hasattr(command, "list_commands"):  # a group (typer bundles its own click)
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                out += _command_markdown(sub, [*path, name], min(level + 1, 4))
    return out


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (the hook's signature)
    """Fill the CLI reference page."""
    if MARKER not in markdown:
        return markdown
    import typer

    from modelproof.cli.app import app

    root = typer.main.get_command(app)
    return markdown.replace(MARKER, "\n".join(_command_markdown(root, ["modelproof"], 2)))
