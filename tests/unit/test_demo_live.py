"""The demo's live view, printed where no terminal is (``sluice demo | tee demo.log``)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.text import Text

from controller.cli.demo import live_display


def test_the_last_frame_ends_its_line_when_the_output_is_not_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=40)
    with live_display(console, Text("stage 4/4 (100%)\nweights 0% / 100%")):
        pass
    console.print("rollout succeeded in 70.2 s")
    assert out.getvalue().splitlines() == [
        "stage 4/4 (100%)",
        "weights 0% / 100%",
        "rollout succeeded in 70.2 s",
    ]
