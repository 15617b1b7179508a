"""The argument parser of nertron's commands, shared by the ``nertron`` CLI and the commands that parse their own
options (``nertron train``, in ``nertron_export.train``), so that neither imports the other for it."""

from __future__ import annotations

import argparse
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse's parser, with its errors in one line (argparse prints the whole usage before them)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
