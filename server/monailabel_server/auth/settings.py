"""Authentication settings, under MONAI Label's own names, read from the environment or ``--conf``.

Off by default (a lab workstation); ``MONAI_LABEL_AUTH_ENABLE=true`` with a realm turns it on. A
``--conf KEY VALUE`` pair of the same name wins over the environment, as MONAI Label's settings do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Dict, Mapping, Optional

__all__ = ["AuthSettings", "PREFIX"]

PREFIX = "MONAI_LABEL_AUTH_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class AuthSettings:
    """How callers are authenticated; each field is ``MONAI_LABEL_AUTH_<FIELD>``.

    Attributes:
        enable: check tokens at all.
        realm_uri: the identity provider's realm (issuer) URL; keys come from its OpenID discovery
            document (``jwks_uri``) and, for Keycloak, from the realm document's ``public_key``.
        timeout: seconds a request to the realm may take before calls fail UNAVAILABLE.
        token_username: claim holding the user name (``sub`` is used when it is absent).
        token_email: claim holding the e-mail address.
        token_name: claim holding the display name.
        token_roles: ``#``-separated path to the list of role names in the token.
        client_id: the realm's client of this app (what viewers log in with; reported, not checked).
        role_admin: role that may delete data and start or cancel training.
        role_reviewer: role of reviewers (annotator rights and above, see ``roles.py``).
        role_annotator: role that may upload images, save labels, edit info and run scoring.
        role_user: role that may read, infer and ask for the next sample.
        audience: required ``aud`` of tokens; empty skips the audience check.
        issuer: required ``iss``; empty takes the discovery document's issuer (else the realm URI).
        leeway: seconds of clock skew allowed on ``exp`` and ``nbf``.
    """

    enable: bool = False
    realm_uri: str = ""
    timeout: float = 10.0
    token_username: str = "preferred_username"
    token_email: str = "email"
    token_name: str = "name"
    token_roles: str = "realm_access#roles"
    client_id: str = "monailabel-app"
    role_admin: str = "monailabel-admin"
    role_reviewer: str = "monailabel-reviewer"
    role_annotator: str = "monailabel-annotator"
    role_user: str = "monailabel-user"
    audience: str = ""
    issuer: str = ""
    leeway: float = 30.0

    def __post_init__(self) -> None:
        if not self.enable:
            return
        if not self.realm_uri.startswith(("http://", "https://")):
            raise ValueError(f"{PREFIX}REALM_URI must be an http(s) URL when {PREFIX}ENABLE is on")
        if self.timeout <= 0:
            raise ValueError(f"{PREFIX}TIMEOUT must be positive")
        if self.leeway < 0:
            raise ValueError(f"{PREFIX}LEEWAY must not be negative")
        if not self.token_roles.strip("#"):
            raise ValueError(f"{PREFIX}TOKEN_ROLES must name a claim")

    @classmethod
    def from_env(
        cls, conf: Optional[Mapping[str, str]] = None, env: Optional[Mapping[str, str]] = None
    ) -> AuthSettings:
        """Reads the settings; a ``--conf`` pair wins over the environment variable of the same name.

        Args:
            conf: the app's ``--conf`` pairs.
            env: the environment (default ``os.environ``).

        Returns:
            The settings.

        Raises:
            ValueError: a value does not parse, or auth is on without a usable realm.
        """
        env = os.environ if env is None else env
        conf = conf or {}
        values: Dict[str, object] = {}
        for f in fields(cls):
            key = PREFIX + f.name.upper()
            raw = conf.get(key, env.get(key))
            if raw is None:
                continue
            raw = str(raw).strip()
            try:
                if f.type in ("bool", bool):
                    if raw.lower() not in _TRUE | _FALSE:
                        raise ValueError(raw)
                    values[f.name] = raw.lower() in _TRUE
                elif f.type in ("float", float):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                raise ValueError(f"{key}: cannot read {raw!r} as {f.type}") from None
        return cls(**values)  # type: ignore[arg-type]
