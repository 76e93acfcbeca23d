"""MONAI Label's auth settings: defaults, the environment, ``--conf`` winning over it, bad values."""

from __future__ import annotations

import pytest

from monailabel_server.auth.settings import AuthSettings


def test_off_by_default_with_monai_labels_defaults() -> None:
    s = AuthSettings.from_env(env={})
    assert not s.enable
    assert s.token_roles == "realm_access#roles" and s.token_username == "preferred_username"
    assert (s.role_admin, s.role_reviewer, s.role_annotator, s.role_user) == (
        "monailabel-admin", "monailabel-reviewer", "monailabel-annotator", "monailabel-user")


def test_environment_and_conf() -> None:
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": "http://idp/realms/a",
           "MONAI_LABEL_AUTH_TIMEOUT": "2.5", "MONAI_LABEL_AUTH_ROLE_ADMIN": "env-admin"}
    s = AuthSettings.from_env({"MONAI_LABEL_AUTH_ROLE_ADMIN": "conf-admin", "roi_size": "32"}, env=env)
    assert s.enable and s.realm_uri == "http://idp/realms/a" and s.timeout == 2.5
    assert s.role_admin == "conf-admin", "--conf wins over the environment"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"MONAI_LABEL_AUTH_ENABLE": "maybe"}, "MONAI_LABEL_AUTH_ENABLE"),
        ({"MONAI_LABEL_AUTH_ENABLE": "1"}, "REALM_URI"),
        ({"MONAI_LABEL_AUTH_ENABLE": "1", "MONAI_LABEL_AUTH_REALM_URI": "file:///etc"}, "REALM_URI"),
        ({"MONAI_LABEL_AUTH_TIMEOUT": "soon"}, "MONAI_LABEL_AUTH_TIMEOUT"),
    ],
)
def test_bad_values_name_the_setting(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuthSettings.from_env(env=values)


def test_start_server_takes_the_security_flags() -> None:
    from monailabel_server.cli import parser

    args = parser().parse_args([
        "start_server", "-a", "app", "-s", "studies", "--tls-cert", "s.pem", "--tls-key", "s.key",
        "--tls-client-ca", "ca.pem", "--reflection", "on", "--audit-log", "audit.log",
        "--conf", "MONAI_LABEL_AUTH_ENABLE", "true",
    ])
    assert (args.tls_cert, args.tls_key, args.tls_client_ca) == ("s.pem", "s.key", "ca.pem")
    assert (args.reflection, args.audit_log) == ("on", "audit.log")
    with pytest.raises(ValueError, match="REALM_URI"):
        AuthSettings.from_env(dict(args.conf), env={})
