"""`tocsin keys`: the deployment's signing keys: rotate them, export what devices trust."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from tocsin.settings import Settings, SettingsError
from tocsin.signing import SigningKey, published_key_set, rotate

# The old key keeps verifying this long after a rotation: alerts it signed stay valid,
# and devices that were offline can still read the statement it signed.
DEFAULT_OVERLAP_DAYS = 30.0

_data_option = click.option(
    "--data", "data_dir", type=click.Path(path_type=Path), default=None,
    help="The node's data directory (default TOCSIN_DATA_DIR); the key is TOCSIN_SIGNING_KEY_FILE if set.",
)


def _settings(data_dir: Path | None) -> Settings:
    try:
        return Settings.from_env(data_dir=data_dir)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(name="keys")
def keys() -> None:
    """The deployment's signing keys."""


@keys.command(name="rotate")
@_data_option
@click.option("--overlap-days", type=click.FloatRange(min=0.0), default=DEFAULT_OVERLAP_DAYS, show_default=True,
              help="How long the current key stays valid after the rotation.")
def rotate_command(data_dir: Path | None, overlap_days: float) -> None:
    """Make a new key and a statement, signed by the current key, that devices accept.

    Nodes serve the statement at once; restart them (one at a time) to sign with the new key.
    """
    settings = _settings(data_dir)
    try:
        old, new = rotate(settings.signing_key_path, settings.key_set_path, datetime.now(UTC),
                          timedelta(days=overlap_days))
    except FileNotFoundError:
        raise click.ClickException(f"no signing key at {settings.signing_key_path}") from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"new key {new.kid}, vouched for by {old.kid} (valid {overlap_days:g} more days)")
    click.echo(f"key set: {settings.key_set_path}; restart the nodes to sign with {new.kid}")


@keys.command(name="export")
@_data_option
def export_command(data_dir: Path | None) -> None:
    """Print the key set, for `tocsin watch --keys` or to ship with an app."""
    settings = _settings(data_dir)
    try:
        signer = SigningKey.load(settings.signing_key_path)
    except FileNotFoundError:
        raise click.ClickException(f"no signing key at {settings.signing_key_path}") from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"keys": published_key_set(signer, settings.key_set_path)["keys"]}, indent=2))
