"""The CodeStream configuration file: the few keys the phone home reads (contract section 4)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.rules.payload import InstallationFacts

PHONE_HOME_URL_ENV = "CS_API_PHONE_HOME_URL"


class Secret:
    """Holds a secret so that printing, logging or repr-ing it never shows the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclass(frozen=True)
class InstallationConfig:
    path: str
    installation_id: str
    installation_version: str
    phone_home_url: str | None
    disable_phone_home: bool
    outbound_email_enabled: bool
    slack_interactive_components_enabled: bool
    phone_home_key: Secret | None

    @property
    def facts(self) -> InstallationFacts:
        return InstallationFacts(
            installation_id=self.installation_id,
            installation_version=self.installation_version,
            outbound_email_enabled=self.outbound_email_enabled,
            slack_interactive_components_enabled=self.slack_interactive_components_enabled,
            disable_phone_home=self.disable_phone_home,
        )

    def require_phone_home_key(self) -> str:
        if self.phone_home_key is None or not self.phone_home_key.reveal():
            raise TelemetryError(
                f"{self.path}: universalSecrets.telemetry is missing; it is the phone-home key"
                " needed to send"
            )
        return self.phone_home_key.reveal()


_MISSING = object()


def _lookup(document: dict, key_path: str, expected: type, path: str) -> Any:
    node: Any = document
    walked = []
    for part in key_path.split("."):
        if not isinstance(node, dict):
            raise TelemetryError(f"{path}: {'.'.join(walked)} must be an object")
        walked.append(part)
        if part not in node:
            return _MISSING
        node = node[part]
    type_name = {str: "a string", bool: "a boolean (true or false)"}[expected]
    if node is None or type(node) is not expected:
        # Say what kind of value it is, never the value: this key may be the secret.
        raise TelemetryError(f"{path}: {key_path} must be {type_name}, found {_json_kind(node)}")
    return node


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}[type(value)]


def load_installation_config(path: str | os.PathLike, phone_home_url_override: str | None = None) -> InstallationConfig:
    """Read and check the configuration file; ``phone_home_url_override`` is CS_API_PHONE_HOME_URL."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TelemetryError(f"{path}: configuration file not found (CODESTREAM_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise TelemetryError(f"{path}: configuration file cannot be read: {reason}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise TelemetryError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(document, dict):
        raise TelemetryError(f"{path}: the configuration must be a JSON object")

    def get(key_path: str, expected: type, default: Any) -> Any:
        value = _lookup(document, key_path, expected, path)
        return default if value is _MISSING else value

    installation_id = get("apiServer.installationId", str, None)
    if not installation_id:
        raise TelemetryError(f"{path}: apiServer.installationId is missing")
    phone_home_url = phone_home_url_override or get("apiServer.phoneHomeUrl", str, None) or None
    key = get("universalSecrets.telemetry", str, None)
    return InstallationConfig(
        path=path,
        installation_id=installation_id,
        installation_version=get("onprem.installationVersion", str, "N/A"),
        phone_home_url=phone_home_url.rstrip("/") if phone_home_url else None,
        disable_phone_home=get("apiServer.disablePhoneHome", bool, False),
        outbound_email_enabled=not get("email.suppressEmails", bool, True),
        slack_interactive_components_enabled=get("slack.interactiveComponentsEnabled", bool, False),
        phone_home_key=Secret(key) if key is not None else None,
    )
