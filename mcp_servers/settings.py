"""Settings of the MCP servers, from the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class McpSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    shop_api_url: str = Field(
        "http://127.0.0.1:8000", description="Where the order API is (SHOP_API_URL)."
    )
    mcp_host: str = Field("127.0.0.1", description="Address to bind over HTTP (MCP_HOST).")
    mcp_port: int | None = Field(None, ge=1, le=65535, description="Port over HTTP (MCP_PORT).")
    shop_api_token: SecretStr | None = Field(
        None, description="The token this server calls the API with: a customer's for the "
        "shop server, an operator's for the ops server (SHOP_API_TOKEN).",
    )
    mcp_token: SecretStr | None = Field(
        None, description="Over HTTP, require 'Authorization: Bearer <token>' (MCP_TOKEN)."
    )
    log_level: LogLevel = Field("WARNING", description="Logs go to stderr (LOG_LEVEL).")
