"""``khaosync init``, ``khaosync doctor`` and ``--version`` (issue 14.9)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from khaosync import __version__
from khaosync.cli.app import app
from khaosync.config import KhaosCredentials, Profile, load_profile


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)
    return CliRunner()


def key_paths(model, prefix: str = "") -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        found.add(prefix + name)
        if hasattr(field.annotation, "model_fields"):
            found |= key_paths(field.annotation, prefix + name + ".")
    return found


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"khaosync {__version__}\n")


def test_init_writes_a_live_config_with_every_key(runner, tmp_path, monkeypatch):
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert result.stderr == "wrote khaosync.yaml: set khaos.soap_url and the Ometria key, then run: khaosync doctor\n"
    text = (tmp_path / "khaosync.yaml").read_text()
    # Every key the configuration takes is in the file (commented credentials included).
    uncommented = yaml.safe_load(text)
    credentials = yaml.safe_load("\n".join(line.replace("#", "", 1) for line in text.splitlines()
                                           if line.strip().startswith("#   ")))
    written = key_paths_of(uncommented) | {f"khaos.credentials.{k}" for k in credentials}
    expected = (key_paths(Profile) - {"source"}) | {f"khaos.credentials.{k}" for k in KhaosCredentials.model_fields}
    assert expected <= written, sorted(expected - written)
    # Every key line says what it is, on the line or the one above.
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if line.strip() and not line.strip().startswith(("#", "-")) and not line.rstrip().endswith(":"):
            assert "#" in line or lines[n - 1].strip().startswith("#"), line
    monkeypatch.setenv("OMETRIA_API_KEY", "k" * 20)
    profile = load_profile("khaosync.yaml")
    assert profile.mode == "live" and profile.khaos.soap_url.startswith("https://kc.example.com/")
    again = runner.invoke(app, ["init"])
    assert again.exit_code == 2 and "khaosync.yaml exists: keep it, or replace it with --force" in again.stderr
    assert runner.invoke(app, ["init", "--force"]).exit_code == 0


def key_paths_of(data: dict, prefix: str = "") -> set[str]:
    found = set()
    for key, value in data.items():
        found.add(prefix + key)
        if isinstance(value, dict) and key != "methods":
            found |= key_paths_of(value, prefix + key + ".")
    return found


def test_doctor_on_a_ready_sandbox(runner):
    assert runner.invoke(app, ["sandbox", "init", "--customers", "25", "--orders", "100"]).exit_code == 0
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["sandbox"] is True and data["ok"] is True
    assert [(k["name"], k["status"]) for k in data["checks"]] == [
        ("config", "ok"), ("ometria key", "ok"), ("ometria", "ok"), ("khaos control", "ok"), ("state store", "warn")]
    assert data["checks"][-1]["fix"] == "the first `khaosync pull` creates it"
    human = runner.invoke(app, ["doctor"])
    assert human.exit_code == 0 and human.stdout.splitlines()[-1] == "doctor: ready"


def test_doctor_says_what_to_fix(runner, tmp_path):
    (tmp_path / "site.yaml").write_text(
        "mode: live\nkhaos: {soap_url: 'http://127.0.0.1:9/KhaosKSD.exe/soap/IKosWeb', retries: 0}\n"
        "state: random.db\n")
    (tmp_path / "random.db").write_bytes(b"\x00not sqlite" * 200)
    result = runner.invoke(app, ["--config", "site.yaml", "doctor", "--json"])
    assert result.exit_code == 1
    checks = {k["name"]: k for k in json.loads(result.stdout)["checks"]}
    assert [(n, k["status"]) for n, k in checks.items()] == [
        ("config", "ok"), ("ometria key", "fail"), ("ometria", "skipped"), ("khaos control", "fail"),
        ("state store", "fail")]
    assert checks["ometria key"]["fix"] == "export OMETRIA_API_KEY=<the key from Ometria's account settings>"
    assert checks["khaos control"]["detail"].startswith("WSDL http://127.0.0.1:9/KhaosKSD.exe/wsdl/IKosWeb: ")
    assert checks["state store"]["detail"] == "random.db: file is not a database"
    human = runner.invoke(app, ["-q", "--config", "site.yaml", "doctor"])
    assert (human.exit_code, human.stdout, human.stderr.splitlines()) == (1, "", ["doctor: 3 check(s) failed"])
    broken = runner.invoke(app, ["--config", "missing.yaml", "doctor", "--json"])
    assert broken.exit_code == 1
    assert json.loads(broken.stdout)["checks"] == [{
        "name": "config", "status": "fail", "detail": "config file missing.yaml not found",
        "fix": "correct the file (khaosync init writes a commented one; README.md lists the keys)"}]
