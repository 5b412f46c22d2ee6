"""Child processes that a test interrupts with SIGINT, as a user's Ctrl-C would."""
from __future__ import annotations

import signal


def ctrl_c_reaches_child() -> None:
    """``preexec_fn`` for such a child: SIGINT back to its default disposition.

    A test run started in the background by a shell without job control (``pytest ... &``, nohup)
    inherits SIGINT ignored, and so would every ckx it starts; a terminal's Ctrl-C never meets that.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
