"""Next sample for many annotators: the app's strategies, with a lease per image so no two clients collide.

Each image served is leased to the client id that asked for it, until that client asks for its next
sample, a final label is saved for the image, or the lease expires (``ServerConfig.lease_ttl_s``).
While an image is leased, strategies do not see it: they get a view of the datastore whose
``get_unlabeled_images`` leaves out images other clients hold, so any MONAI Label strategy (which picks
among the unlabeled images) works unchanged. Selection and leasing happen under one lock, so two
clients asking at the same moment never get the same image, not even on different replicas: the pick
and the lease are one database transaction under a lock every replica takes. Leases live in the
database (SQLite, or the PostgreSQL that replicas share) and survive restarts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

from monailabel.db import Migration, database_url, migrate, open_database
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = ["LeaseStore", "NextSampler", "Sample", "FOUND", "NONE_LEFT", "ALL_LEASED", "DEFAULT_CLIENT_ID"]

logger = logging.getLogger(__name__)

FOUND, NONE_LEFT, ALL_LEASED = "FOUND", "NONE_LEFT", "ALL_LEASED"
#: MONAI Label's client id when a request names none
DEFAULT_CLIENT_ID = "user-xyz"
_MAX_CLIENT_ID = 256

_MIGRATIONS = [
    Migration(1, "leases", [
        "CREATE TABLE IF NOT EXISTS leases (image_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, "
        "strategy TEXT NOT NULL, expire_time REAL NOT NULL)",
    ]),
]


class LeaseStore:
    """Leases of images to clients, in the database (``MONAI_LABEL_DATABASE_URL``, else the SQLite file ``path``).

    Args:
        path: the embedded database file; its folder is created.
        url: the database; empty for ``MONAI_LABEL_DATABASE_URL`` or else ``path``.
    """

    def __init__(self, path: Path, url: str = "") -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = open_database(url or database_url(path))
        migrate(self.db, "leases", _MIGRATIONS)

    def close(self) -> None:
        """Closes the database."""
        self.db.close()

    def exclusive(self) -> Any:
        """A transaction that excludes every other replica's lease changes (pick and lease in one)."""
        return self.db.write(lock="leases")

    def live(self, now: float) -> Dict[str, str]:
        """Returns ``{image_id: client_id}`` of the leases that have not expired (and drops the others)."""
        with self.db.write() as c:
            c.execute("DELETE FROM leases WHERE expire_time <= ?", (now,))
            return {str(r[0]): str(r[1]) for r in c.execute("SELECT image_id, client_id FROM leases").fetchall()}

    def holder(self, image_id: str, now: float) -> Optional[str]:
        """Returns the client holding a live lease on an image, or None."""
        row = self.db.execute(
            "SELECT client_id FROM leases WHERE image_id = ? AND expire_time > ?", (image_id, now)
        ).fetchone()
        return str(row[0]) if row else None

    def acquire(self, image_id: str, client_id: str, strategy: str, expire_time: float) -> None:
        """Leases an image to a client (replacing any lease it had)."""
        self.db.execute(
            "INSERT INTO leases (image_id, client_id, strategy, expire_time) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (image_id) DO UPDATE SET client_id = excluded.client_id, strategy = excluded.strategy, "
            "expire_time = excluded.expire_time",
            (image_id, client_id, strategy, expire_time),
        )

    def release_client(self, client_id: str) -> List[str]:
        """Ends a client's leases; returns their images."""
        with self.db.write() as c:
            ids = [str(r[0]) for r in c.execute("SELECT image_id FROM leases WHERE client_id = ?", (client_id,))]
            c.execute("DELETE FROM leases WHERE client_id = ?", (client_id,))
        return ids

    def release_image(self, image_id: str) -> bool:
        """Ends the lease on an image; returns whether there was one."""
        return bool(self.db.execute("DELETE FROM leases WHERE image_id = ?", (image_id,)).rowcount > 0)


class _HidingView:
    """A datastore whose ``get_unlabeled_images`` leaves out some images; everything else passes through."""

    def __init__(self, datastore: Datastore, hidden: Set[str]) -> None:
        self._datastore = datastore
        self._hidden = hidden

    def get_unlabeled_images(self, *args: Any, **kwargs: Any) -> List[str]:
        return [i for i in self._datastore.get_unlabeled_images(*args, **kwargs) if i not in self._hidden]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._datastore, name)


@dataclass
class Sample:
    """What a next-sample request found.

    Attributes:
        status: FOUND, NONE_LEFT or ALL_LEASED.
        strategy: the strategy that ran.
        image_id: the image (FOUND only).
        path: the image's file (FOUND only).
        fields: the strategy's other fields.
        client_id: the client the image is leased to.
        lease_expire_time: when the lease ends (seconds since the epoch).
        unlabeled_count: unlabeled images left.
    """

    status: str
    strategy: str
    image_id: str = ""
    path: str = ""
    fields: Dict[str, Any] = field(default_factory=dict)
    client_id: str = ""
    lease_expire_time: Optional[float] = None
    unlabeled_count: int = 0


def check_client_id(client_id: str) -> str:
    """Returns the client id to lease to (MONAI Label's default when empty).

    Raises:
        MONAILabelException: INVALID_INPUT for an id that is too long or holds control characters.
    """
    if not client_id:
        return DEFAULT_CLIENT_ID
    if len(client_id) > _MAX_CLIENT_ID or not client_id.isprintable():
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT,
            f"client_id must be printable and at most {_MAX_CLIENT_ID} characters; got {client_id[:40]!r}...",
        )
    return client_id


class NextSampler:
    """Runs the app's strategies for many clients, leasing each image served.

    Args:
        app: the app.
        db_path: the lease database.
        lease_ttl_s: how long a lease lasts unless its client asks again or saves a final label.
        clock: the time in seconds since the epoch (tests pass their own).
    """

    def __init__(
        self, app: MONAILabelApp, db_path: Path, lease_ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.app = app
        self.clock = clock
        self.lease_ttl_s = float(lease_ttl_s)
        self.leases = LeaseStore(db_path)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Closes the lease store."""
        self.leases.close()

    def next(self, strategy: str, client_id: str, params: Dict[str, Any]) -> Sample:
        """Ends the client's previous lease, runs the strategy over the images nobody else holds, leases its pick.

        Args:
            strategy: the strategy ("random" when empty).
            client_id: who asks (MONAI Label's default when empty).
            params: the strategy's parameters.

        Returns:
            the sample; NONE_LEFT or ALL_LEASED when there is nothing to hand out.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown strategy, INVALID_INPUT for bad parameters,
                CONFLICT when the strategy picks an image another client holds, and whatever it raises.
        """
        strategy = strategy or "random"
        client_id = check_client_id(client_id)
        task = self.app.strategies().get(strategy)
        if task is None:
            names = ", ".join(sorted(self.app.strategies())) or "none"
            raise MONAILabelException(
                MONAILabelError.NOT_FOUND, f"strategy '{strategy}' does not exist; available: {names}"
            )
        request = dict(params, strategy=strategy, client_id=client_id)
        validate = getattr(task, "validate", None)
        if callable(validate):
            validate(dict(request))

        datastore = self.app.datastore()
        with self._lock, self.leases.exclusive():
            now = self.clock()
            self.leases.release_client(client_id)
            held = self.leases.live(now)
            res = self.app.next_sample(request, datastore=_HidingView(datastore, set(held)))  # type: ignore[arg-type]
            unlabeled = datastore.get_unlabeled_images()
            if not res:
                status = ALL_LEASED if any(i in held for i in unlabeled) else NONE_LEFT
                return Sample(status, strategy, client_id=client_id, unlabeled_count=len(unlabeled))
            image_id = str(res["id"])
            if image_id in held:
                if all(i in held for i in unlabeled):
                    return Sample(ALL_LEASED, strategy, client_id=client_id, unlabeled_count=len(unlabeled))
                raise MONAILabelException(
                    MONAILabelError.CONFLICT,
                    f"strategy '{strategy}' chose image '{image_id}', which another client is labeling; "
                    "a strategy should choose among datastore.get_unlabeled_images()",
                )
            expire = now + self.lease_ttl_s
            self.leases.acquire(image_id, client_id, strategy, expire)
        logger.info("next sample (%s) for %s: %s, leased until %.0f", strategy, client_id, image_id, expire)
        fields = {k: v for k, v in res.items() if k not in ("id", "path")}
        return Sample(
            FOUND, strategy, image_id, str(res.get("path") or ""), fields, client_id, expire, len(unlabeled)
        )

    def release_image(self, image_id: str) -> None:
        """Ends the lease on an image (its final label was saved, or it was deleted)."""
        if self.leases.release_image(image_id):
            logger.info("lease on %s released", image_id)
