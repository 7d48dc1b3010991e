"""Logging: syslog through a real local socket, and a missing socket falls back loudly."""

from __future__ import annotations

import logging
import socket

import pytest

from dnl_ad import logs


@pytest.fixture(autouse=True)
def restore_root_logging():
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in saved:
            root.removeHandler(handler)
            handler.close()
    for handler in saved:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def test_syslog_lines_reach_the_socket(settings, tmp_path, monkeypatch) -> None:
    path = str(tmp_path / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    monkeypatch.setattr(logs, "SYSLOG_SOCKET", path)
    try:
        logs.setup(settings.replace(syslog=True))
        logging.getLogger("dnl_ad.test").warning("client 7 low balance queued")
        assert b"client 7 low balance queued" in server.recv(4096)
    finally:
        server.close()


def test_syslog_without_its_socket_falls_back_to_stderr_with_one_warning(
        settings, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(logs, "SYSLOG_SOCKET", str(tmp_path / "missing.sock"))
    logs.setup(settings.replace(syslog=True))
    logging.getLogger("dnl_ad.test").info("first line")
    logging.getLogger("dnl_ad.test").error("second line")
    err = capsys.readouterr().err
    assert err.count("missing.sock") == 1 and "stderr" in err.splitlines()[0]
    assert "first line" in err and "second line" in err
    logs.setup(settings.replace(syslog=True))  # SIGHUP: still one warning per setup
    assert capsys.readouterr().err.count("missing.sock") == 1


def test_a_detached_daemon_falls_back_to_its_logfile(settings, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(logs, "SYSLOG_SOCKET", str(tmp_path / "missing.sock"))
    logs.setup(settings.replace(syslog=True), detached=True)
    logging.getLogger("dnl_ad.test").warning("a line for the file")
    logs.shutdown()
    text = (tmp_path / "dnl_ad.log").read_text()
    assert text.count("missing.sock") == 1 and "a line for the file" in text
