"""What train.py, eval.py and `python -m jaxformer.predict` share on the command line: bad input
ends in one `error: ...` line and a non-zero status, a signal in the conventional 128 + signal
number, and tracebacks are left for bugs; and the flags of a multi-process run
(`--multihost`), one process per host.

Mirrors absl's `app.run(main, flags_parser=...)`: the parser here only turns ml_collections'
errors for a `--config.x=y` override (a KeyError or AttributeError naming the field, from deep in
the flag parsing) into that one line.

The processes of a multi-process run fail together where they can (they decide on the same
values), and then exit as usual, meeting at jax's shutdown barrier. A failure only one process
sees (its peer died and a collective broke off, or a second Ctrl-C) ends that process at once
instead: waiting at the shutdown barrier for peers that wait in a collective for it would hang
them all, while its closed connections end their collectives too.

The multi-process flags are `jax.distributed.initialize`'s arguments, read from jax's environment
variables when not given, and left to jax's cluster auto-detection (Slurm, Open MPI, Kubernetes,
Cloud TPU) when neither gives them.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable, Mapping

import jax
from absl import app, flags

from jaxformer.data.imdb import ImdbArchiveError
from jaxformer.data.locks import LockedError
from jaxformer.training.checkpoints import DamagedCheckpointError, first_line
from jaxformer.training.metrics import TrainingError
from jaxformer.training.processes import Stopped

# Errors of the user's input or environment: one line, no traceback.
USER_ERRORS = (
    TrainingError,
    ImdbArchiveError,
    DamagedCheckpointError,
    LockedError,
    FileNotFoundError,
    ValueError,
)


# (flag, environment variable) of each `jax.distributed.initialize` argument.
DISTRIBUTED = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def define_distributed_flags() -> None:
    """--multihost and the coordinates of this process in the run."""
    flags.DEFINE_bool(
        "multihost",
        False,
        "One process of a multi-process run (one per host): call jax.distributed.initialize() "
        "first, with the three flags below or, where they are not given, $JAX_COORDINATOR_ADDRESS, "
        "$JAX_NUM_PROCESSES and $JAX_PROCESS_ID; with none of them jax detects the cluster "
        "(Slurm, Open MPI, Kubernetes, Cloud TPU).",
    )
    flags.DEFINE_string(
        "coordinator_address", None, "host:port of process 0, where the coordinator listens."
    )
    flags.DEFINE_integer("num_processes", None, "Number of processes in the run.", lower_bound=1)
    flags.DEFINE_integer("process_id", None, "This process's index, 0 <= id < num_processes.")
    flags.DEFINE_integer(
        "heartbeat_timeout",
        100,
        "Seconds without a heartbeat after which a process counts as dead and the others stop.",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "initialization_timeout",
        300,
        "Seconds to wait for every process to reach the coordinator.",
        lower_bound=1,
    )


def distributed_arguments(
    multihost: bool, given: Mapping[str, object], environ: Mapping[str, str] = os.environ
) -> dict | None:
    """`jax.distributed.initialize`'s coordinator_address, num_processes and process_id from
    the flags `given` (None: not given), else jax's environment variables: {} leaves all three
    to jax's cluster detection, None means a one-process run. ValueError for a bad combination."""
    named = [f"--{name}" for name, value in given.items() if value is not None]
    if not multihost:
        if named:
            raise ValueError(f"{', '.join(named)} configure a multi-process run: add --multihost")
        return None
    args = {}
    for name, variable in DISTRIBUTED.items():
        value = given.get(name)
        if value is None and environ.get(variable):
            value = environ[variable]
            if name != "coordinator_address":
                try:
                    value = int(value)
                except ValueError:
                    raise ValueError(f"${variable}={value!r} is not an integer") from None
        if value is not None:
            args[name] = value
    if not args:
        return {}
    missing = [f"--{name} (or ${DISTRIBUTED[name]})" for name in DISTRIBUTED if name not in args]
    if missing:
        raise ValueError(
            f"--multihost got {', '.join(sorted(args))} but not {', '.join(missing)}: give all "
            "three, or none of them for jax's cluster detection"
        )
    host, _, port = str(args["coordinator_address"]).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"coordinator_address={args['coordinator_address']!r} is not host:port "
            "(e.g. 10.0.0.1:1234, the address of process 0)"
        )
    n, i = args["num_processes"], args["process_id"]
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"process_id={i} must be in [0, num_processes={n})")
    return args


def initialize_distributed() -> None:
    """`jax.distributed.initialize` as the flags of `define_distributed_flags` ask; nothing
    without --multihost. ValueError (one `error:` line) for bad flags or a failed start."""
    args = distributed_arguments(
        flags.FLAGS.multihost, {name: flags.FLAGS[name].value for name in DISTRIBUTED}
    )
    if args is None:
        return
    try:
        jax.distributed.initialize(
            **args,
            initialization_timeout=flags.FLAGS.initialization_timeout,
            heartbeat_timeout_seconds=flags.FLAGS.heartbeat_timeout,
        )
    except ValueError as e:  # nothing given and no cluster detected
        raise ValueError(
            f"--multihost found no cluster to join ({e}): give --coordinator_address, "
            "--num_processes and --process_id, or $JAX_COORDINATOR_ADDRESS, "
            "$JAX_NUM_PROCESSES and $JAX_PROCESS_ID"
        ) from None
    except Exception as e:  # jaxlib's errors: the coordinator did not answer in time
        where = args.get("coordinator_address", "the detected coordinator")
        raise ValueError(
            f"could not start process {args.get('process_id', '?')} of the multi-process run "
            f"with the coordinator at {where} ({first_line(e)}): check that every process was "
            f"started within --initialization_timeout={flags.FLAGS.initialization_timeout} s "
            "with the same --coordinator_address and --num_processes, and distinct --process_id"
        ) from None


def fail(message: str, status: int = 1, alone: bool = False):
    """One `error:` line and exit `status`; `alone`: this process fails and its peers do not
    (see the module docstring)."""
    print(f"error: {message}", file=sys.stderr)
    leave(status, alone)


def leave(status: int, alone: bool = False):
    import jax

    if alone and jax.distributed.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # no shutdown barrier: the peers may be waiting elsewhere
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
            leave(128 + signal.SIGINT, alone=True)
        except USER_ERRORS as e:
            fail(str(e).strip().replace("\n", " "))
        except jax.errors.JaxRuntimeError as e:
            if not jax.distributed.is_initialized():
                raise  # a bug
            fail(
                f"process {jax.process_index()} of {jax.process_count()}: a collective of the "
                f"multi-process run failed ({first_line(e)}); another process most likely "
                "died, see its log. Rerun every process to resume from the latest checkpoint",
                alone=True,
            )

    app.run(guarded, flags_parser=parse_flags)
