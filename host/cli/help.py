"""What every ``spu`` command shares: a parser that refuses abbreviated options and reports a
user's mistake in one line (exit 2, no traceback), help that shows each real default once, and
argument types that check ranges where they are parsed."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from typing import NoReturn
from urllib.parse import urlsplit


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already states its default,
    the option is a switch (store_true/store_false), or it has no default (None, suppressed)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" in text or action.nargs == 0 or not action.option_strings
                or action.default is None or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class Parser(argparse.ArgumentParser):
    """An ArgumentParser without abbreviated options (``--kappa`` is not ``--kappa0``) whose
    errors are one line on stderr and exit code 2. Subcommands' parsers are of this class too."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def fail(message: str) -> int:
    """Report a user's mistake found after parsing: one line on stderr; returns exit code 2."""
    print(f"spu: error: {message}", file=sys.stderr)
    return 2


def number(kind: Callable[[str], float], low: float, high: float = math.inf,
           low_open: bool = False, what: str = "value") -> Callable[[str], float]:
    """An argument type: ``kind`` of the text (int accepts 1e3), within [low, high] (or
    (low, high] with ``low_open``), else an error that names the range."""
    bound = f"> {low:g}" if low_open else f">= {low:g}"
    if high < math.inf:
        bound += f" and <= {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
            if kind is int:
                if value != int(value):
                    raise ValueError
                value = int(value)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what}") from None
        if not (value > low if low_open else value >= low) or not value <= high:
            raise argparse.ArgumentTypeError(f"{text}: a {what} must be {bound}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


COUNT = number(int, 1, what="positive whole number")
NONNEGATIVE = number(float, 0.0, what="non-negative number")
POSITIVE = number(float, 0.0, low_open=True, what="positive number")


def endpoint(text: str) -> str:
    """A ZeroMQ endpoint: tcp://HOST:PORT, ipc://PATH; HOST:PORT is taken as tcp://HOST:PORT."""
    if "://" not in text and re.fullmatch(r"[\w.\-]+:\d+|\[[0-9a-fA-F:.]+\]:\d+", text):
        text = f"tcp://{text}"
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = None
    if (parts.scheme == "ipc" and parts.netloc + parts.path) or (
            parts.scheme == "tcp" and parts.hostname and port is not None):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not an endpoint: expected tcp://HOST:PORT "
                                     "(e.g. tcp://127.0.0.1:5555) or ipc://PATH")
