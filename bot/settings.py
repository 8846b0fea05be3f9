"""The bot's settings, read from the environment or a `.env` file and validated once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.intake import CDN_HOSTS, origin
from nst_engine.api import MAX_SIZE, MIN_SIZE


class Settings(BaseSettings):
    """Every knob of a running bot. Environment names are `STYLEBOT_<FIELD>`, except the token."""

    model_config = SettingsConfigDict(
        env_prefix="STYLEBOT_", env_file=".env", extra="ignore", populate_by_name=True
    )

    discord_token: SecretStr | None = Field(default=None, validation_alias="DISCORD_TOKEN")
    # The recommended way: a file that holds the token (a Docker secret), see bot.credentials.
    discord_token_file: Path | None = Field(default=None, validation_alias="DISCORD_TOKEN_FILE")
    prefix: str = Field(default="!", min_length=1, max_length=10)
    message_content_intent: bool = True
    sync_commands: bool = True

    max_size: int = Field(default=1024, ge=MIN_SIZE, le=MAX_SIZE)
    default_size: int = Field(default=512, ge=MIN_SIZE, le=MAX_SIZE)
    default_quality: Literal["draft", "standard", "high"] = "standard"
    user_running: int = Field(default=1, ge=1)
    user_waiting: int = Field(default=2, ge=0)
    guild_jobs: int = Field(default=8, ge=1)
    total_jobs: int = Field(default=50, ge=1)

    max_attachment_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(default=50_000_000, ge=1024)
    download_timeout: float = Field(default=30.0, gt=0)
    download_hosts: Annotated[tuple[str, ...], NoDecode] = CDN_HOSTS
    max_downloads: int = Field(default=4, ge=1)
    upload_attempts: int = Field(default=5, ge=1)

    data_dir: Path = Path("data")
    keep_days: float = Field(default=7.0, ge=0)

    engine: Literal["local", "ray"] = "local"  # local: ProcessPoolEngine; ray: RayEngine
    ray_address: str | None = None  # host:6379, auto or ray://host:10001; None: a local cluster
    ray_painters: int = Field(default=1, ge=1)  # painters per GPU, or per CPU-only node
    workers: int | None = Field(default=None, ge=1)
    workers_per_device: int = Field(default=1, ge=1)
    # local engine: jobs a CUDA worker paints as one batch (1: off; CPU workers never batch)
    batch_max: int = Field(default=1, ge=1)
    painter_nice: int = Field(default=10, ge=0, le=19)  # painters' CPU priority below the bot's
    devices: Annotated[tuple[str, ...], NoDecode] = ()
    job_timeout: float = Field(default=600.0, gt=0)
    max_iterations: int | None = Field(default=None, ge=1)
    status_interval: float = Field(default=3.0, ge=0)
    shutdown_grace: float = Field(default=20.0, ge=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    loop_debug: bool = False  # asyncio debug mode: log every step that holds the loop 20 ms+

    @field_validator("devices", "download_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("download_hosts")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            origin(entry)  # a bare host (https, port 443) or scheme://host[:port]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _token_from_file(self) -> Settings:
        if self.discord_token_file is None:
            return self
        if self.discord_token is not None and self.discord_token.get_secret_value().strip():
            raise ValueError("set DISCORD_TOKEN or DISCORD_TOKEN_FILE, not both")
        path = self.discord_token_file
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"DISCORD_TOKEN_FILE: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"DISCORD_TOKEN_FILE: {path} is not UTF-8 text") from None
        self.discord_token = SecretStr(text.strip())
        return self

    @model_validator(mode="after")
    def _default_fits_cap(self) -> Settings:
        if self.default_size > self.max_size:
            raise ValueError("STYLEBOT_DEFAULT_SIZE must not exceed STYLEBOT_MAX_SIZE")
        return self
