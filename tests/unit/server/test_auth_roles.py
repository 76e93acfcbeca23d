"""The role table covers the API: every RPC of every service has exactly one declared role, the table
names no RPC that doesn't exist, and the audited calls are real RPCs that need more than the user role."""

from __future__ import annotations

import importlib
import pkgutil
from typing import List

from google.protobuf.descriptor import ServiceDescriptor

import monailabel_api.v1 as api
from monailabel_server.audit import AUDITED
from monailabel_server.auth.roles import OPEN_SERVICES, RPC_ROLES, Role, rank_of, required_role, role_name
from monailabel_server.auth.settings import AuthSettings


def api_services() -> List[ServiceDescriptor]:
    """Every service of every ``*_pb2`` module of the API, found by walking the package."""
    services = []
    for info in pkgutil.iter_modules(api.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{api.__name__}.{info.name}")
            services.extend(module.DESCRIPTOR.services_by_name.values())
    return services


def test_every_rpc_of_every_service_declares_a_role() -> None:
    services = api_services()
    assert len(services) >= 5
    rpcs = [f"/{s.full_name}/{m.name}" for s in services for m in s.methods]
    missing = [rpc for rpc in rpcs if required_role(rpc) is None]
    assert not missing, f"RPCs without a role in monailabel_server/auth/roles.py: {missing}"


def test_the_table_names_only_real_rpcs() -> None:
    real = {s.full_name: {m.name for m in s.methods} for s in api_services()}
    stale = [f"{svc}/{name}" for svc, methods in RPC_ROLES.items() for name in methods
             if name not in real.get(svc, set())]
    assert not stale, f"roles declared for RPCs the API doesn't have: {stale}"
    assert not set(RPC_ROLES) & OPEN_SERVICES


def test_audited_calls_exist_and_need_more_than_reading() -> None:
    for service, methods in AUDITED.items():
        for name in methods:
            role = RPC_ROLES[service][name]
            assert role >= Role.ANNOTATOR, f"{service}/{name} changes state but needs only {role.name}"
    writes = {f"{s}/{m}" for s, ms in RPC_ROLES.items() for m, r in ms.items() if r == Role.ADMIN}
    audited = {f"{s}/{m}" for s, ms in AUDITED.items() for m in ms}
    assert writes <= audited, f"admin-only calls not audited: {writes - audited}"


def test_roles_rank_and_use_the_configured_names() -> None:
    settings = AuthSettings(role_admin="boss", role_user="staff")
    assert role_name(Role.ADMIN, settings) == "boss"
    assert rank_of(frozenset({"staff"}), settings) == Role.USER
    assert rank_of(frozenset({"staff", "boss"}), settings) == Role.ADMIN
    assert rank_of(frozenset({"monailabel-admin"}), settings) == 0, "the default name no longer counts"
    assert rank_of(frozenset({"monailabel-reviewer"}), settings) == Role.REVIEWER > Role.ANNOTATOR
