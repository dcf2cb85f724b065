"""`metastack db upgrade|current` on a SQLite file, and a clear error for a dead database."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from metastack.cli import main


def test_upgrade_then_current(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    runner = CliRunner()
    assert runner.invoke(main, ["db", "current", "--database-url", url]).output == "none\n"
    result = runner.invoke(main, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 0, result.output
    current = runner.invoke(main, ["db", "current", "--database-url", url]).output.strip()
    assert current and current != "none"
    assert f"revision {current}" in result.output


def test_unreachable_database_is_a_clear_error() -> None:
    result = CliRunner().invoke(
        main, ["db", "upgrade", "--database-url", "postgresql+psycopg://x@127.0.0.1:1/none"]
    )
    assert result.exit_code == 1
    assert "database unavailable" in result.output


def test_broken_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[api]\nworkers = 'x'\n")
    result = CliRunner().invoke(main, ["db", "upgrade", "--config", str(config)])
    assert result.exit_code == 2
    assert "api.workers" in result.output
