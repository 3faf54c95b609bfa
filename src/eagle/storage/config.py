"""Storage configuration: which backend, where, and the S3 connection settings.

Pure data, no backend imports: choosing ``fs`` never imports the S3 library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eagle.utils.config import ByteSize

MiB = 1 << 20
# S3 refuses parts under 5 MiB (except the last); 8 MiB is what the AWS CLI uses.
MIN_PART_SIZE = 5 * MiB


class S3Options(BaseModel):
    """The ``s3:`` config mapping. Unset keys fall back to the usual AWS sources
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
    ``AWS_ENDPOINT_URL``, ``AWS_CA_BUNDLE``, ``~/.aws/*``, instance roles)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str | None = Field(None, description="e.g. http://minio:9000; unset = AWS")
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    ca_bundle: Path | None = Field(None, description="PEM file of CAs for the endpoint's TLS")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="path for most self-hosted S3 servers"
    )
    part_size: ByteSize = Field(8 * MiB, ge=MIN_PART_SIZE, description="multipart upload part")
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    max_attempts: int = Field(3, ge=1, description="botocore retries of failed requests")

    @model_validator(mode="before")
    @classmethod
    def _dashes(cls, value: object) -> object:
        # YAML keys may use dashes like every other Eagle key.
        if isinstance(value, dict):
            return {str(k).replace("-", "_"): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _both_keys(self) -> S3Options:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access-key-id and secret-access-key, or neither")
        return self


class StorageConfig(BaseModel):
    """Where a seeder keeps blobs: a location string plus backend settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    location: str = Field(description="fs:/path, /path, s3://bucket/prefix or NAME:...")
    s3: S3Options = Field(default_factory=S3Options)
