"""The installed wheel works outside the checkout: templates are package data.

The slow test builds the wheel from a copy of the source tree, installs it into a fresh
venv in a temporary folder and runs `dnl-ad preview` there against a demo database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

from dnl_ad import config
from dnl_ad.devtools import demo_data

from .conftest import utc
from .test_daemon import REPO

NOW = utc(2026, 11, 21, 9)


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "dnl_ad").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert "dnl_ad.templates" in listed


def test_default_templates_come_from_the_package_or_the_checkout() -> None:
    default = Path(config.default_template_dir())
    assert (default / "low_balance.txt.j2").is_file()
    assert config.Settings().template_dir == str(default)


def _copy_source(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_previews_a_mail(conn, settings,
                                                            tmp_path) -> None:
    source = _copy_source(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(dist), str(source)], check=True, capture_output=True,
                   timeout=300)
    wheel = next(dist.glob("dnl_ad-*.whl"))
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "-q", str(wheel)], check=True, capture_output=True,
                   timeout=300)
    # The dependencies (psycopg2, Jinja2, ...) come from the test environment's
    # site-packages, appended after the fresh venv's own: dnl_ad itself is the wheel's.
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with conn.cursor() as cur:
        demo_data.generate(cur, 60, NOW)
    work = tmp_path / "elsewhere"
    work.mkdir()
    ini = work / "dnl_ad.ini"
    ini.write_text(f"[dnl_ad]\nCONNECTION_STRING = {settings.connection_string}\n"
                   f"SMTP_FROM = alerts@carrier.example\n"
                   f"CDR_DOWNLOAD_URL = https://portal.carrier.example/cdr\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DNL_AD_", "PYTHON", "VIRTUAL_ENV"))}
    where = subprocess.run([str(python), "-c", "import dnl_ad, dnl_ad.config as c; "
                            "print(dnl_ad.__file__); print(c.default_template_dir())"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    module, templates = where.stdout.split()
    assert module.startswith(str(site)) and templates.startswith(str(site))
    for alert, client in (("1", "10"), ("3", "5")):
        proc = subprocess.run([str(fresh / "bin" / "dnl-ad"), "--config", str(ini),
                               "preview", alert, "--client", client, "--at", NOW.isoformat()],
                              cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"To: billing{client}@client{client}.example" in proc.stdout
        assert "Subject: " in proc.stdout and "Traceback" not in proc.stderr
