import json

import pytest

from khaosync.config import check_url, load_profile
from khaosync.errors import ConfigError


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)


def write(path, text):
    path.write_text(text)
    return path


def test_no_config_means_sandbox():
    profile = load_profile()
    assert profile.is_sandbox
    assert profile.state == ".khaosync/state.db"


def test_default_config_file_is_picked_up(tmp_path):
    write(tmp_path / "khaosync.yaml", "mode: sandbox\nstate: other.db\n")
    profile = load_profile()
    assert profile.is_sandbox and profile.state == "other.db" and profile.source == "khaosync.yaml"


def test_live_profile_must_be_explicit(tmp_path):
    cfg = write(tmp_path / "site.yaml", "khaos:\n  soap_url: https://kc.example.com/LiveSoap/KhaosKSD.exe/soap/IKosWeb\n")
    with pytest.raises(ConfigError, match="mode: required"):
        load_profile(cfg)


def test_live_profile_cannot_point_at_the_in_process_sandbox(tmp_path):
    cfg = write(tmp_path / "site.yaml", "mode: live\n")
    with pytest.raises(ConfigError, match="sandbox's in-process address"):
        load_profile(cfg)


LIVE = """\
mode: live
name: acme
khaos:
  soap_url: https://kc.acme.example/LiveSoap/KhaosKSD.exe/soap/IKosWeb
  credentials: {username: sync, password: hunter2-kc-secret}
ometria:
  base_url: https://api.ometria.com/v2
  api_key: live-key-0123456789abcdef
  collection: khaos
"""


def test_live_profile_loads(tmp_path):
    profile = load_profile(write(tmp_path / "site.yaml", LIVE))
    assert not profile.is_sandbox
    assert profile.ometria.resolved_api_key().get_secret_value() == "live-key-0123456789abcdef"
    assert profile.khaos.resolved_wsdl_url().endswith("/wsdl/IKosWeb")


def test_masked_dump_never_contains_secrets(tmp_path):
    profile = load_profile(write(tmp_path / "site.yaml", LIVE))
    text = json.dumps(profile.masked())
    assert "live-key-0123456789abcdef" not in text
    assert "hunter2-kc-secret" not in text
    assert profile.masked()["ometria"]["api_key"] == "***"
    assert "hunter2" not in repr(profile) and "live-key" not in str(profile)


def test_api_key_from_environment(tmp_path, monkeypatch):
    cfg = write(tmp_path / "site.yaml", LIVE.replace("  api_key: live-key-0123456789abcdef\n", "  api_key_env: ACME_KEY\n"))
    profile = load_profile(cfg)
    with pytest.raises(ConfigError, match="ACME_KEY"):
        profile.ometria.resolved_api_key()
    monkeypatch.setenv("ACME_KEY", "from-env")
    assert profile.ometria.resolved_api_key().get_secret_value() == "from-env"
    assert profile.masked()["ometria"]["api_key_set"] is True


@pytest.mark.parametrize("url", [
    "http://api.ometria.com/v2", "http://10.0.0.5:8084/LiveSoap/KhaosKSD.exe/soap/IKosWeb", "http://kc.local/x",
    # Issue 11.12: a name under .localhost is whatever DNS says it is; only localhost itself counts.
    "http://api.ometria.com.localhost/v2", "http://evil.localhost:8700/x", "http://127.0.0.1.nip.io/x",
])
def test_plain_http_refused_off_loopback(url):
    with pytest.raises(ValueError, match="plain http:// is refused"):
        check_url(url, "test")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8700/ometria/v2", "http://localhost:1/x", "http://[::1]:8/x",
                                 "http://LOCALHOST:1/x", "http://127.10.0.3/x", "https://kc.example.com/x"])
def test_loopback_and_https_allowed(url):
    assert check_url(url, "test") == url


def test_http_refusal_reported_with_key_path(tmp_path):
    cfg = write(tmp_path / "site.yaml", LIVE.replace("https://api.ometria.com/v2", "http://api.ometria.com/v2"))
    with pytest.raises(ConfigError) as info:
        load_profile(cfg)
    assert "ometria.base_url" in str(info.value) and "plain http://" in str(info.value)


def test_unknown_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="ometria.colection"):
        load_profile(write(tmp_path / "site.yaml", LIVE + "  colection: typo\n"))


def test_bad_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(write(tmp_path / "site.yaml", "mode: [live\n"))
