"""optuna-dashboard over a study's storage and artifact folder (the `dashboard` extra, imported lazily)."""

from __future__ import annotations

import errno
import logging
import sys
from typing import Any

from nas.errors import UserError

__all__ = ["require_dashboard", "study_url", "serve"]

log = logging.getLogger(__name__)


def require_dashboard() -> Any:
    """The `optuna_dashboard` module, or a UserError naming the extra that provides it."""
    try:
        import optuna_dashboard
    except ImportError:
        raise UserError("the dashboard needs the 'dashboard' extra (optuna-dashboard is not installed): "
                        "pip install '.[dashboard]'") from None
    return optuna_dashboard


def study_url(host: str, port: int, study_id: int) -> str:
    """The dashboard page of one study."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard/studies/{study_id}"


def serve(handle: Any, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the study's storage (all its studies) and artifacts until interrupted; prints the study's URL.

    Bound to 127.0.0.1 by default: the dashboard has no authentication and can edit notes and trials.
    """
    dashboard = require_dashboard()
    if not 0 < port < 65536:
        raise UserError(f"--port must be in 1..65535, got {port}")
    study_id = handle.storage.get_study_id_from_name(handle.study.study_name)
    print(f"optuna-dashboard for study {handle.study.study_name!r}: {study_url(host, port, study_id)}", flush=True)
    print(f"artifacts: {handle.artifacts.base_path}  (stop with Ctrl-C)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the dashboard is reachable from other machines at %s:%d and has no authentication", host, port)
    try:
        dashboard.run_server(handle.storage, host=host, port=port, artifact_store=handle.artifacts)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise UserError(f"cannot serve the dashboard on {host}:{port}: {exc.strerror}") from None
        raise
    finally:
        sys.stdout.flush()
