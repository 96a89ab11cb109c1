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


def test_the_last_frame_ends_its_line_when_the_output_is_not_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=40)
    with live_display(console, FRAME):
        pass
    console.print("rollout succeeded in 70.2 s")
    assert out.getvalue().splitlines() == [
        "stage 4/4 (100%)",
        "weights 0% / 100%",
        "rollout succeeded in 70.2 s",
    ]


def test_an_error_leaving_the_display_is_printed_on_a_line_of_its_own() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=40)
    with pytest.raises(KeyboardInterrupt), live_display(console, FRAME):
        raise KeyboardInterrupt
    console.print("interrupted: everything stopped")
    assert out.getvalue().splitlines()[-1] == "interrupted: everything stopped"


def test_a_terminal_gets_no_blank_line() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=40)
    with live_display(console, FRAME):
        pass
    console.print("rollout succeeded in 70.2 s")
    assert ANSI.sub("", out.getvalue()).endswith("weights 0% / 100%\nrollout succeeded in 70.2 s\n")
