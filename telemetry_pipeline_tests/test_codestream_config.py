"""The CodeStream configuration file (contract section 4), read from real files."""

from __future__ import annotations

import json
import os

import pytest

from telemetry_pipeline.codestream_config import load_installation_config
from telemetry_pipeline.errors import TelemetryError

KEY = "phk-Zq81-secret-value"


def write(tmp_path, document, name="codestream.json"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def minimal():
    return {"apiServer": {"installationId": "inst-123"}}


def full():
    return {
        "apiServer": {"installationId": "inst-123", "phoneHomeUrl": "https://collector.example.com/base/",
                      "disablePhoneHome": True, "port": 443, "somethingNew": {"a": 1}},
        "onprem": {"installationVersion": "14.2.0"},
        "email": {"suppressEmails": False},
        "slack": {"interactiveComponentsEnabled": True},
        "universalSecrets": {"telemetry": KEY},
        "telemetry": {"disabled": True},
        "unknownTopLevel": [1, 2, 3],
    }


def load_error(path, override=None) -> str:
    with pytest.raises(TelemetryError) as caught:
        load_installation_config(path, override)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# --- values and defaults


def test_defaults_when_keys_are_absent(tmp_path):
    config = load_installation_config(write(tmp_path, minimal()))
    assert config.installation_id == "inst-123"
    assert config.installation_version == "N/A"
    assert config.outbound_email_enabled is False  # suppressEmails defaults to true
    assert config.slack_interactive_components_enabled is False
    assert config.disable_phone_home is False
    assert config.phone_home_url is None
    assert config.phone_home_key is None


def test_defaults_when_the_sections_exist_but_are_empty(tmp_path):
    document = {"apiServer": {"installationId": "i"}, "onprem": {}, "email": {}, "slack": {},
                "universalSecrets": {}}
    config = load_installation_config(write(tmp_path, document))
    assert (config.installation_version, config.outbound_email_enabled,
            config.slack_interactive_components_enabled, config.disable_phone_home, config.phone_home_url) == (
        "N/A", False, False, False, None)


def test_every_key_read_and_unknown_keys_ignored(tmp_path):
    config = load_installation_config(write(tmp_path, full()))
    assert config.installation_id == "inst-123"
    assert config.installation_version == "14.2.0"
    assert config.outbound_email_enabled is True
    assert config.slack_interactive_components_enabled is True
    assert config.disable_phone_home is True
    assert config.phone_home_url == "https://collector.example.com/base"
    assert config.require_phone_home_key() == KEY


def test_suppress_emails_true_means_outbound_email_disabled(tmp_path):
    document = minimal()
    document["email"] = {"suppressEmails": True}
    assert load_installation_config(write(tmp_path, document)).outbound_email_enabled is False


def test_facts_carry_the_configuration_into_the_payload(tmp_path):
    facts = load_installation_config(write(tmp_path, full())).facts
    assert (facts.installation_id, facts.installation_version, facts.outbound_email_enabled,
            facts.slack_interactive_components_enabled, facts.disable_phone_home) == (
        "inst-123", "14.2.0", True, True, True)


def test_phone_home_url_override_wins(tmp_path):
    config = load_installation_config(write(tmp_path, full()), "http://127.0.0.1:9/override/")
    assert config.phone_home_url == "http://127.0.0.1:9/override"


def test_phone_home_url_override_without_url_in_file(tmp_path):
    config = load_installation_config(write(tmp_path, minimal()), "http://127.0.0.1:9")
    assert config.phone_home_url == "http://127.0.0.1:9"


def test_no_override_uses_the_file(tmp_path):
    assert load_installation_config(write(tmp_path, full()), None).phone_home_url == (
        "https://collector.example.com/base")


@pytest.mark.parametrize("url, expected", [
    ("http://h:1/", "http://h:1"),
    ("http://h:1", "http://h:1"),
    ("http://h:1/a/b/", "http://h:1/a/b"),
])
def test_trailing_slash_stripped(tmp_path, url, expected):
    document = minimal()
    document["apiServer"]["phoneHomeUrl"] = url
    assert load_installation_config(write(tmp_path, document)).phone_home_url == expected


def test_accepts_a_path_object_and_a_string(tmp_path):
    path = write(tmp_path, minimal())
    assert load_installation_config(str(path)).installation_id == "inst-123"
    assert load_installation_config(path).installation_id == "inst-123"


def test_non_ascii_values_are_read_as_utf8(tmp_path):
    document = minimal()
    document["onprem"] = {"installationVersion": "14.2.0-é"}
    path = tmp_path / "c.json"
    path.write_bytes(json.dumps(document, ensure_ascii=False).encode("utf-8"))
    assert load_installation_config(path).installation_version == "14.2.0-é"


# --- errors: one line naming the file and the key


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.json"
    assert str(path) in load_error(path)


def test_directory_instead_of_file(tmp_path):
    directory = tmp_path / "a-directory.json"
    directory.mkdir()
    assert str(directory) in load_error(directory)


def test_invalid_json_names_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "apiServer": {\n    "installationId": "x",,\n  }\n}\n')
    message = load_error(path)
    assert str(path) in message
    assert "line 3" in message
    assert "column 27" in message  # the second comma


def test_empty_file(tmp_path):
    path = write(tmp_path, "")
    assert str(path) in load_error(path)


@pytest.mark.parametrize("text", ["[]", '[{"apiServer": {"installationId": "x"}}]', '"text"', "42", "null"])
def test_top_level_not_an_object(tmp_path, text):
    path = write(tmp_path, text)
    assert str(path) in load_error(path)


@pytest.mark.parametrize("document", [
    {},
    {"apiServer": {}},
    {"apiServer": {"phoneHomeUrl": "http://h"}},
    {"apiServer": {"installationId": ""}},
])
def test_missing_installation_id_names_the_key(tmp_path, document):
    path = write(tmp_path, document)
    message = load_error(path)
    assert str(path) in message
    assert "apiServer.installationId" in message


@pytest.mark.parametrize("document, key", [
    ({"apiServer": {"installationId": "i", "disablePhoneHome": "yes"}}, "apiServer.disablePhoneHome"),
    ({"apiServer": {"installationId": "i", "disablePhoneHome": 1}}, "apiServer.disablePhoneHome"),
    ({"apiServer": {"installationId": "i", "disablePhoneHome": None}}, "apiServer.disablePhoneHome"),
    ({"apiServer": {"installationId": 12345}}, "apiServer.installationId"),
    ({"apiServer": {"installationId": "i", "phoneHomeUrl": 80}}, "apiServer.phoneHomeUrl"),
    ({"apiServer": {"installationId": "i"}, "email": {"suppressEmails": "false"}}, "email.suppressEmails"),
    ({"apiServer": {"installationId": "i"}, "slack": {"interactiveComponentsEnabled": 0}},
     "slack.interactiveComponentsEnabled"),
    ({"apiServer": {"installationId": "i"}, "onprem": {"installationVersion": 14}}, "onprem.installationVersion"),
])
def test_wrong_types_name_the_file_and_the_key(tmp_path, document, key):
    path = write(tmp_path, document)
    message = load_error(path)
    assert str(path) in message
    assert key in message


def test_api_server_being_a_string_names_api_server(tmp_path):
    path = write(tmp_path, {"apiServer": "inst-123"})
    message = load_error(path)
    assert str(path) in message
    assert "apiServer" in message


def test_section_being_a_list_names_the_section(tmp_path):
    path = write(tmp_path, {"apiServer": {"installationId": "i"}, "email": [True]})
    message = load_error(path)
    assert str(path) in message
    assert "email" in message


# --- the secret


def test_repr_and_str_of_the_config_never_show_the_key(tmp_path):
    config = load_installation_config(write(tmp_path, full()))
    for text in (repr(config), str(config), repr(config.phone_home_key), str(config.phone_home_key),
                 f"{config}", f"{config.phone_home_key}", repr(config.facts)):
        assert KEY not in text
    assert config.require_phone_home_key() == KEY  # it is there, only hidden


@pytest.mark.parametrize("document", [
    minimal(),
    {**minimal(), "universalSecrets": {}},
    {**minimal(), "universalSecrets": {"telemetry": ""}},
])
def test_require_phone_home_key_names_universal_secrets_telemetry(tmp_path, document):
    path = write(tmp_path, document)
    config = load_installation_config(path)
    with pytest.raises(TelemetryError) as caught:
        config.require_phone_home_key()
    message = str(caught.value)
    assert "universalSecrets.telemetry" in message
    assert str(path) in message
    assert "\n" not in message


def test_a_missing_key_is_not_an_error_until_sending(tmp_path):
    config = load_installation_config(write(tmp_path, minimal()))
    assert config.installation_id == "inst-123"


def test_a_wrongly_typed_key_is_not_echoed_in_the_error(tmp_path):
    # Contract section 6: the phone-home key never appears in error messages.
    path = write(tmp_path, {**minimal(), "universalSecrets": {"telemetry": 86753091234}})
    message = load_error(path)
    assert "universalSecrets.telemetry" in message
    assert "86753091234" not in message


def test_a_wrongly_typed_key_fails_naming_the_key(tmp_path):
    path = write(tmp_path, {**minimal(), "universalSecrets": {"telemetry": 86753091234}})
    assert "universalSecrets.telemetry" in load_error(path)


def test_file_is_not_modified_by_loading(tmp_path):
    path = write(tmp_path, full())
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    load_installation_config(path)
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
