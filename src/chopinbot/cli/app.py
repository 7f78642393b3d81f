"""`chopinbot app`: start the web app (Streamlit) on this machine.

The app's script is :mod:`chopinbot.app.layout`; this command only checks the flags,
passes the model choice on through environment variables
(``CHOPINBOT_MODEL``, ``CHOPINBOT_MODELS_DIR``, ``CHOPINBOT_APP_WORKERS``,
``CHOPINBOT_APP_MAX_QUEUE``) and replaces itself with ``streamlit run``,
headless, without usage statistics, file watcher or error details in the page,
and with the app's upload limit (:data:`chopinbot.app.settings.UPLOAD_LIMIT_MB`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from chopinbot.app.settings import (
    DEFAULT_MAX_QUEUE,
    DEFAULT_MODELS_DIR,
    DEFAULT_WORKERS,
    MAX_QUEUE_ENV,
    MODEL_ENV,
    MODELS_DIR_ENV,
    SERVE_ENV,
    UPLOAD_LIMIT_MB,
    WORKERS_ENV,
)
from chopinbot.cli.args import port, positive_int
from chopinbot.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 = everyone)")
    p.add_argument("--port", type=port, default=8501, help="port (default: %(default)s)")
    p.add_argument("--model", help="the model offered first: a checkpoint or run folder (default: the shipped model)")
    p.add_argument("--models-dir", default=None,
                   help=f"also offer every run folder under this folder (default: ${MODELS_DIR_ENV} or "
                        f"{DEFAULT_MODELS_DIR}/)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help=f"pieces composed at once (default: {DEFAULT_WORKERS}; more requests wait in a bounded queue)")
    p.add_argument("--max-queue", type=positive_int, default=None,
                   help="requests waiting or running, all visitors together, before new ones are refused "
                        f"(default: {DEFAULT_MAX_QUEUE})")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of starting the server")


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for ``args``."""
    script = Path(__file__).resolve().parent.parent / "app" / "layout.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.address", args.host,
        "--server.port", str(args.port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--server.maxUploadSize", str(UPLOAD_LIMIT_MB),
        "--server.showEmailPrompt", "false",
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", args.host if args.host not in ("0.0.0.0", "::") else "localhost",
        "--client.showErrorDetails", "none",
        "--client.toolbarMode", "minimal",
        "--global.developmentMode", "false",
        # no full garbage collection after every page run (Python's own still runs): with torch and
        # the model in the heap it held the interpreter after each run; 21 visitors pressing Generate
        # at once cost the page's process 5.4 s of CPU with it, 1.1 s without (docs/reliability.md)
        "--runner.postScriptGC", "false",
    ]


def app_environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment of the server process."""
    from chopinbot.app.registry import list_models  # loads models (torch): not for `chopinbot app --help`

    env = dict(os.environ)
    if args.model:
        env[MODEL_ENV] = str(Path(args.model).resolve())
    if args.models_dir:
        env[MODELS_DIR_ENV] = str(Path(args.models_dir).resolve())
    elif MODELS_DIR_ENV not in env:
        env[MODELS_DIR_ENV] = str(DEFAULT_MODELS_DIR.resolve())
    if args.workers:
        env[WORKERS_ENV] = str(args.workers)
    if args.max_queue:
        env[MAX_QUEUE_ENV] = str(args.max_queue)
    env[SERVE_ENV] = "1"
    # one intra-op thread per generation: the pool runs several at once
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    models = list_models(env[MODELS_DIR_ENV], configured=env.get(MODEL_ENV))
    if not models:
        raise ConfigError("no model to offer: there is no shipped model and no run folder under "
                          f"{env[MODELS_DIR_ENV]}; train one (`chopinbot train`) or pass --model")
    return env


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be 1..65535, not {args.port}")
    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise ConfigError("the web app needs Streamlit: pip install 'chopinbot[app]'") from None
    env = app_environment(args)
    cmd = streamlit_command(args)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    print(f"ChopinBot app on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    if os.name == "posix":
        os.execve(sys.executable, cmd, env)  # the server replaces this process: signals reach it directly
    import subprocess  # pragma: no cover - non-POSIX

    return subprocess.call(cmd, env=env)  # pragma: no cover
