"""The demo's live view, printed where no terminal is (``sluice demo | tee demo.log``) and
where one is."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from rich.text import Text

from controller.cli.demo import live_display

FRAME = Text("stage 4/4 (100%)\nweights 0% / 100%")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def shown(terminal: bool, after: str, error: type[BaseException] | None = None) -> str:
    """What a console (a terminal or not) received: the live display of :data:`FRAME`, left
    normally or by ``error``, then the line ``after``; without terminal control codes."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=40)
    if error is None:
        with live_display(console, FRAME):
            pass
    else:
        with pytest.raises(error), live_display(console, FRAME):
            raise error
    console.print(after)
    return ANSI.sub("", out.getvalue())


def test_the_last_frame_ends_its_line_when_the_output_is_not_a_terminal() -> None:
    assert shown(False, "rollout succeeded in 70.2 s").splitlines() == [
        "stage 4/4 (100%)",
        "weights 0% / 100%",
        "rollout succeeded in 70.2 s",
    ]


def test_an_error_leaving_the_display_is_printed_on_a_line_of_its_own() -> None:
    text = shown(False, "interrupted: everything stopped", KeyboardInterrupt)
    assert text.splitlines()[-1] == "interrupted: everything stopped"


def test_a_terminal_gets_no_blank_line() -> None:
    text = shown(True, "rollout succeeded in 70.2 s")
    assert text.endswith("weights 0% / 100%\nrollout succeeded in 70.2 s\n")
