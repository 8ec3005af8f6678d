"""What `tollgate.init` was given, completed from the environment and
checked once, so that a wrong setting fails at start-up with one message
naming it rather than at the first model call."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

DEFAULT_API = "http://127.0.0.1:7070"

# Environment variables (arguments of `init` win over them). TOLLGATE_KEY
# and TOLLGATE_API_URL are the ones the `tollgate` CLI reads too.
ENV_API = "TOLLGATE_API_URL"
ENV_KEY = "TOLLGATE_KEY"
ENV_GATEWAY_KEY = "TOLLGATE_GATEWAY_KEY"
ENV_ORG = "TOLLGATE_ORG"
ENV_PROJECT = "TOLLGATE_PROJECT"
ENV_ENVIRONMENT = "TOLLGATE_ENVIRONMENT"
ENV_GATEWAY = "TOLLGATE_GATEWAY"
ENV_ON_UNREACHABLE = "TOLLGATE_ON_UNREACHABLE"


class SettingError(ValueError):
    """A setting of `tollgate.init` (or its variable) that cannot be used."""


@dataclass(frozen=True)
class GatewaySetting:
    """Where guarded clients send model calls: `off` (to the provider),
    `auto` (through the gateway when the collector runs one) or a fixed
    gateway base URL."""

    mode: str
    url: Optional[str] = None

    @staticmethod
    def parse(value: str) -> "GatewaySetting":
        v = value.strip()
        if v in ("off", "false"):
            return GatewaySetting("off")
        if v == "auto":
            return GatewaySetting("auto")
        if v.startswith("http://") or v.startswith("https://"):
            return GatewaySetting("on", v.rstrip("/"))
        raise SettingError(f"gateway={value!r}: expected 'off', 'auto' or the gateway's http(s):// URL")


@dataclass(frozen=True)
class Settings:
    api: str
    org: Optional[str]
    project: Optional[str]
    environment: Optional[str]
    # Sent to the collector's API and, unless OTEL_EXPORTER_OTLP_HEADERS
    # says otherwise, to the OTLP receiver. Never printed (see __repr__).
    key: Optional[str]
    gateway_key: Optional[str]
    gateway: GatewaySetting
    fail_closed: bool
    poll_interval: float
    reconnect_min: float
    reconnect_max: float
    request_timeout: float
    stale_after: float
    first_state_timeout: float

    def __repr__(self) -> str:
        return (
            f"Settings(api={self.api!r}, org={self.org!r}, project={self.project!r}, "
            f"environment={self.environment!r}, key={'set' if self.key else None}, "
            f"gateway={self.gateway!r}, fail_closed={self.fail_closed})"
        )

    @property
    def base_scope(self) -> Dict[str, str]:
        """The process's fixed scope dimensions (without app)."""
        return {k: v for k, v in (("org", self.org), ("project", self.project), ("environment", self.environment)) if v}


def _pick(arg: Optional[str], env: Mapping[str, str], name: str) -> Optional[str]:
    if arg is not None:
        return arg or None
    value = env.get(name, "").strip()
    return value or None


def resolve(
    *,
    api: Optional[str],
    org: Optional[str],
    project: Optional[str],
    environment: Optional[str],
    key: Optional[str],
    gateway_key: Optional[str],
    gateway: Optional[str],
    on_unreachable: Optional[str],
    poll_interval: float,
    reconnect_min: float,
    reconnect_max: float,
    request_timeout: float,
    stale_after: float,
    first_state_timeout: float,
    env: Optional[Mapping[str, str]] = None,
) -> Settings:
    env = os.environ if env is None else env
    api_url = (_pick(api, env, ENV_API) or DEFAULT_API).rstrip("/")
    if not (api_url.startswith("http://") or api_url.startswith("https://")):
        raise SettingError(f"api={api_url!r}: expected the collector API's http(s):// URL, e.g. {DEFAULT_API}")
    mode = (_pick(on_unreachable, env, ENV_ON_UNREACHABLE) or "open").strip()
    if mode not in ("open", "closed"):
        raise SettingError(f"on_unreachable={mode!r}: expected 'open' (allow calls) or 'closed' (refuse them)")
    the_key = _pick(key, env, ENV_KEY)
    for name, value in (
        ("poll_interval", poll_interval),
        ("reconnect_min", reconnect_min),
        ("reconnect_max", reconnect_max),
        ("request_timeout", request_timeout),
        ("stale_after", stale_after),
    ):
        if not value > 0:
            raise SettingError(f"{name}={value!r}: expected a number of seconds above 0")
    if reconnect_max < reconnect_min:
        raise SettingError(f"reconnect_max={reconnect_max} is below reconnect_min={reconnect_min}")
    if first_state_timeout < 0:
        raise SettingError(f"first_state_timeout={first_state_timeout!r}: expected seconds, 0 or more")
    setting = GatewaySetting.parse(_pick(gateway, env, ENV_GATEWAY) or "auto")
    the_gateway_key = _pick(gateway_key, env, ENV_GATEWAY_KEY) or the_key
    if setting.mode == "on" and not the_gateway_key:
        raise SettingError(
            f"gateway={setting.url!r} sends calls through the gateway, which needs a virtual key: "
            f"pass gateway_key= (or key=), or set {ENV_GATEWAY_KEY}"
        )
    return Settings(
        api=api_url,
        org=_pick(org, env, ENV_ORG),
        project=_pick(project, env, ENV_PROJECT),
        environment=_pick(environment, env, ENV_ENVIRONMENT),
        key=the_key,
        gateway_key=the_gateway_key,
        gateway=setting,
        fail_closed=mode == "closed",
        poll_interval=poll_interval,
        reconnect_min=reconnect_min,
        reconnect_max=reconnect_max,
        request_timeout=request_timeout,
        stale_after=stale_after,
        first_state_timeout=first_state_timeout,
    )
