"""What train.py, eval.py and `python -m jaxformer.predict` share on the command line: bad input
ends in one `error: ...` line and a non-zero status, a signal in the conventional 128 + signal
number, and tracebacks are left for bugs.

Mirrors absl's `app.run(main, flags_parser=...)`: the parser here only turns ml_collections'
errors for a `--config.x=y` override (a KeyError or AttributeError naming the field, from deep in
the flag parsing) into that one line.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Callable

from absl import app, flags

from jaxformer.data.imdb import ImdbArchiveError
from jaxformer.data.locks import LockedError
from jaxformer.training.checkpoints import DamagedCheckpointError
from jaxformer.training.loop import Stopped
from jaxformer.training.metrics import TrainingError

# Errors of the user's input or environment: one line, no traceback.
USER_ERRORS = (
    TrainingError,
    ImdbArchiveError,
    DamagedCheckpointError,
    LockedError,
    FileNotFoundError,
    ValueError,
)


def fail(message: str, status: int = 1):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def _field_problem(argv: list[str], e: Exception) -> str:
    """An unknown `--config.` field: which argument, and ml_collections' suggestion."""
    while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(...))
        e = e.args[0]
    text = str(e.args[0]) if e.args else str(e)
    names = re.findall(r"'([^'\s]+)'", text)
    key = names[0] if names else ""
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    culprit = next(
        (a for a in argv if a.startswith("--config.") and key and key in a.split("=")[0]),
        None,
    )
    where = f"{culprit.split('=')[0]} " if culprit else ""
    hint = f' (did you mean "{suggestion.group(1)}"?)' if suggestion else ""
    return (
        f"{where}names no config field {key!r}{hint}; the fields and their defaults are in "
        "jaxformer/training/config.py"
    )


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every error as one `error:` line (status 2, as absl's usage
    errors)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"{e} (see --helpshort)", 2)
    except (KeyError, AttributeError) as e:  # ml_collections: no such field
        fail(_field_problem(argv, e), 2)


def run(main: Callable[[list[str]], None]) -> None:
    """`app.run(main)`, with the user's errors, Ctrl-C and SIGTERM as one line each."""

    def guarded(argv):
        try:
            main(argv)
        except Stopped as e:
            print(e, file=sys.stderr)
            sys.exit(128 + e.signum)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(128 + signal.SIGINT)
        except USER_ERRORS as e:
            fail(str(e).strip().replace("\n", " "))

    app.run(guarded, flags_parser=parse_flags)
