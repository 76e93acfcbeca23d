"""Authentication (OIDC bearer tokens), authorization (MONAI Label's roles per RPC) and the caller's identity.

* :mod:`.settings`: ``MONAI_LABEL_AUTH_*`` settings;
* :mod:`.tokens`: realm keys and token verification;
* :mod:`.roles`: the one table of the role each RPC needs;
* :mod:`.interceptor`: the interceptor enforcing it, and :func:`current_identity` for servicers.
"""

from monailabel_server.auth.interceptor import AuthInterceptor, caller_or, current_identity, require_role, stamp_user
from monailabel_server.auth.roles import RPC_ROLES, Role, required_role
from monailabel_server.auth.settings import AuthSettings
from monailabel_server.auth.tokens import Identity, TokenVerifier

__all__ = [
    "AuthInterceptor",
    "AuthSettings",
    "Identity",
    "Role",
    "RPC_ROLES",
    "TokenVerifier",
    "caller_or",
    "current_identity",
    "require_role",
    "required_role",
    "stamp_user",
]
