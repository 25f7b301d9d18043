"""The ``medbench`` command line: a thin layer over the library.

Each feature area contributes its commands from its own module through ``register(app)``, so this
file stays small and importing the CLI stays fast (heavy imports happen inside the commands).
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from medbench.errors import MedbenchError

app = typer.Typer(
    name="medbench",
    help="Medical-imaging robustness and transferability workbench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that define ``register(app: typer.Typer) -> None``; each must import (errors are raised, never skipped).
COMMAND_MODULES = (
    "medbench.io.cli",
    "medbench.data.cli",
    "medbench.sources.cli",
    "medbench.train.cli",
    "medbench.eval.cli",
    "medbench.demo",
    "medbench.interop.cli",
    "confounders.cli",
    "transferability.cli",
    "harmonization.xray.cli",
    "harmonization.ct.cli",
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in QUIET_LOGGERS:  # -v is for medbench's messages, not matplotlib's font search
        logging.getLogger(noisy).setLevel(logging.WARNING)


#: Third-party loggers kept at WARNING even with -v (matplotlib's font manager floods DEBUG).
QUIET_LOGGERS = ("matplotlib", "PIL", "fsspec", "urllib3", "h5py", "numexpr", "asyncio", "git", "mlflow",
                 "tensorboard", "filelock", "httpx", "httpcore")
INTERRUPTED = "interrupted; re-run the same command to resume"


def _hide_flag_types() -> None:
    """Typer's help shows ``<bool>`` beside every on/off flag; a flag takes no value, so show none."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_medbench_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        if getattr(self, "is_flag", False) and not getattr(self, "count", False):
            return None
        return original(self, ctx)

    display_type_rich._medbench_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_types()


def _register_all() -> None:
    """Add every command module's commands; a module that fails to import is an error, not a gap."""
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def _click_exception_types() -> tuple[type[BaseException], ...]:
    """click's usage-error base class, from click itself and from the copy newer typer vendors."""
    import importlib

    found = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def main() -> None:
    """Console-script entry point: user errors print one clear line and exit 2."""
    try:
        code = app(standalone_mode=False)
    except MedbenchError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):  # click turns Ctrl-C into Abort
        typer.secho(INTERRUPTED, fg=typer.colors.YELLOW, err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors: one line and exit 2, never a traceback
        if isinstance(exc, _click_exception_types()):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
