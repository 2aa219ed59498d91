"""Settings: the one reader of the environment (and of the .env file)."""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from upstox_bot.domain import InstrumentKind
from upstox_bot.errors import ConfigError


class MarketSource(StrEnum):
    SIM = "sim"
    REPLAY = "replay"  # bars from CSV files played as trades (the backtester's path)
    UPSTOX = "upstox"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class AlertChannel(StrEnum):
    TELEGRAM = "telegram"
    WEBHOOK = "webhook"
    EMAIL = "email"


class Settings(BaseSettings):
    """Every knob of the bot. Names are the environment variables; .env.example documents each."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
        env_ignore_empty=True,
    )

    # --- Storage and services -------------------------------------------------------------
    DATA_DIR: Path = Field(Path("var"), description="Folder for the SQLite database and state.")
    DATABASE_URL: str | None = Field(
        None, description="SQLAlchemy URL; unset = SQLite file upstox_bot.sqlite in DATA_DIR."
    )
    REDIS_URL: str | None = Field(None, description="Redis URL; optional in the embedded harness.")
    ACCOUNT_NAME: str = Field("paper", min_length=1, max_length=64)

    # --- API ----------------------------------------------------------------------------------
    API_HOST: str = "127.0.0.1"
    API_PORT: int = Field(8000, ge=0, le=65535)
    CORS_ORIGINS: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API, JSON list; [] = none (same origin).",
    )
    LOG_LEVEL: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    LOG_FORMAT: LogFormat = LogFormat.CONSOLE

    # --- API limits (docs/api.md, "Limits") --------------------------------------------------
    API_MAX_BODY_BYTES: int = Field(
        1_048_576, ge=1024, le=104_857_600, description="Larger request bodies answer 413."
    )
    API_HEADER_TIMEOUT_SECONDS: float = Field(
        10.0, gt=0, le=300, description="A connection whose request headers take longer closes."
    )
    API_BODY_TIMEOUT_SECONDS: float = Field(
        30.0, gt=0, le=3600, description="A request body that takes longer answers 408."
    )
    API_AUTH_FAILURE_LIMIT: int = Field(
        20, ge=1, le=1_000_000, description="Failed authentications per client and window."
    )
    API_AUTH_FAILURE_WINDOW_SECONDS: int = Field(
        60, ge=1, le=86_400, description="Beyond the limit a client gets 429 for this long."
    )

    # --- Trading rules (DESIGN.md) ------------------------------------------------------------
    ACCOUNT_SIZE: Decimal = Field(Decimal("100000"), gt=0, description="Capital in rupees.")
    FIXED_RISK_CAPITAL: bool = Field(
        False,
        description="Size every day's limits on ACCOUNT_SIZE instead of the day's opening "
        "capital (ACCOUNT_SIZE plus the net P&L of every day before).",
    )
    RISK_PER_TRADE: Decimal = Field(
        Decimal("5"), gt=0, le=100, description="Percent of capital lost if the stop is hit."
    )
    POSITION_SIZE_PERCENT: Decimal = Field(Decimal("30"), gt=0, le=100)
    MAX_OPEN_POSITIONS: int = Field(3, ge=1, le=100)
    DAILY_LOSS_LIMIT: Decimal = Field(
        Decimal("2"), gt=0, le=100, description="Percent of capital, realised + unrealised."
    )
    STOP_LOSS_PERCENT: Decimal = Field(Decimal("5"), gt=0, lt=100)
    TAKE_PROFIT_PERCENT: Decimal = Field(Decimal("4"), gt=0, le=1000)
    TRAILING_STOP_PERCENT: Decimal = Field(Decimal("2"), gt=0, lt=100)
    MAX_ORDERS_PER_MINUTE: int = Field(10, ge=1, le=1000)
    MIN_ORDER_INTERVAL_SECONDS: int = Field(30, ge=0, le=3600)
    ENTRY_START_TIME: time = Field(time(9, 20), description="No entry before (IST).")
    ENTRY_END_TIME: time = Field(time(14, 45), description="No entry after (IST).")
    SQUARE_OFF_TIME: time = Field(time(15, 15), description="Intraday positions closed at (IST).")
    ALLOW_SHORT: bool = Field(False, description="Take short entries on short signals.")
    KILL_SWITCH_SQUARE_OFF: bool = Field(
        True, description="Turning the kill switch on also closes open positions."
    )

    # --- Paper and live -------------------------------------------------------------------
    PAPER_TRADING: bool = True
    LIVE_TRADING_ENABLED: bool = Field(False, description="The explicit switch for live orders.")
    PAPER_TRADING_DAYS_REQUIRED: int = Field(14, ge=0)
    SLIPPAGE_BPS: Decimal = Field(
        Decimal("5"), ge=0, le=500, description="Paper fills: basis points against the trader."
    )
    BROKERAGE_PER_ORDER: Decimal = Field(
        Decimal("20"), ge=0, le=100, description="Upstox flat brokerage per executed order (Rs)."
    )

    # --- Strategy -----------------------------------------------------------------------
    STRATEGY: str = Field("ema_rsi", min_length=1)
    STRATEGY_PARAMS: dict[str, Any] = Field(
        default_factory=dict, description='JSON object, e.g. {"fast": 9, "slow": 21}.'
    )
    CANDLE_INTERVAL_MINUTES: int = Field(1, ge=1, le=375)
    SIGNAL_COOLDOWN_MINUTES: int = Field(
        5, ge=0, le=375, description="No new entry signal for a symbol this soon after its last."
    )
    STRATEGIES_DIR: Path | None = Field(
        None, description="Folder of the trader's own strategy files (*.py); unset = none."
    )
    BACKTEST_DATA_DIRS: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Comma list of folders that API backtests may read besides DATA_DIR.",
    )

    # --- What to trade on a signal ----------------------------------------------------------
    TRADE_INSTRUMENT: InstrumentKind = Field(
        InstrumentKind.EQUITY, description="equity (the stock, intraday), future or option."
    )
    OPTION_MIN_DAYS_TO_EXPIRY: int = Field(
        7, ge=0, le=90, description="Options: nearest expiry with more calendar days left."
    )
    EXPIRY_EXIT_SESSIONS: int = Field(
        1, ge=1, le=10, description="F&O: close this many sessions before expiry (physical)."
    )
    FUTURES_MARGIN_PERCENT: Decimal = Field(
        Decimal("20"),
        gt=0,
        le=100,
        description="Futures in paper and backtests: margin blocked, % of notional value.",
    )

    # --- Market -------------------------------------------------------------------------
    MARKET: MarketSource = MarketSource.SIM
    SIM_SEED: int = 7
    SIM_SPEED: float = Field(20.0, gt=0, le=100000, description="Simulated seconds per second.")
    SIM_SYMBOLS: int = Field(40, ge=1, le=500, description="Stocks in the simulated market.")
    SIM_TICK_INTERVAL_MS: int = Field(1000, ge=10, le=60000)
    HOLIDAYS_FILE: Path | None = Field(None, description="CSV of NSE holidays; unset = shipped.")
    TICK_STORE_INTERVAL_SECONDS: int = Field(
        5, ge=0, le=3600, description="Store one tick per symbol this often; 0 stores none."
    )

    # --- Upstox --------------------------------------------------------------------------
    UPSTOX_API_BASE_URL: str = "https://api.upstox.com"
    UPSTOX_API_KEY: str | None = None
    UPSTOX_API_SECRET: SecretStr | None = None
    UPSTOX_REDIRECT_URI: str = "http://127.0.0.1:8000/api/v1/auth/upstox/callback"
    UPSTOX_ACCESS_TOKEN: SecretStr | None = None
    UPSTOX_ALGO_NAME: str | None = None
    TOKEN_ENCRYPTION_KEY: SecretStr | None = None
    FNO_BAN_LIST: str | None = Field(
        None, description="NSE F&O ban list: a file path or http(s) URL (fo_secban.csv)."
    )

    # --- Live orders: protection, deadlines, look-ups (docs/upstox.md) --------------------------
    MARKET_PROTECTION: Decimal = Field(
        Decimal("-1"),
        description="market_protection of MARKET orders: -1 Upstox's automatic band, 0 none "
        "(refused by Upstox's 2026 rules), or a band of 1-25 percent.",
    )
    ENTRY_ORDER_TIMEOUT_SECONDS: int = Field(
        60, ge=5, le=3600, description="An entry not filled by then is cancelled."
    )
    EXIT_ORDER_TIMEOUT_SECONDS: int = Field(
        10, ge=2, le=600, description="An exit not filled by then is re-priced (modify)."
    )
    EXIT_REPRICE_PERCENT: Decimal = Field(
        Decimal("1"),
        gt=0,
        le=25,
        description="A re-priced exit's limit is this far through the last price, times the "
        "re-price number (capped at 25%).",
    )
    EXIT_REPRICE_ATTEMPTS: int = Field(
        5, ge=1, le=50, description="Re-prices before an exit is escalated with an alert."
    )
    ORDER_BLOCK_RETRY_SECONDS: int = Field(
        60,
        ge=5,
        le=3600,
        description="While Upstox refuses the account's orders, a held exit is tried this often.",
    )
    UPSTOX_TAG_LOOKUP_SECONDS: float = Field(
        10.0,
        ge=1,
        le=300,
        description="After a lost answer, the order book and history are searched this long for "
        "the order's tag before it is sent again (Upstox's book lag is undocumented).",
    )
    LIVE_TRADING_FORCE_REASON: str | None = Field(
        None,
        max_length=500,
        description="Start live trading before PAPER_TRADING_DAYS_REQUIRED days of paper "
        "history, for this reason (audited); unset = the paper period is enforced.",
    )

    @field_validator("MARKET_PROTECTION", mode="after")
    @classmethod
    def _market_protection(cls, value: Decimal) -> Decimal:
        # API.md 5.2, 9.2 (March 2026 rules): -1 automatic, 0 none, else a 1-25% band.
        if not value.is_finite() or not (value in (-1, 0) or 1 <= value <= 25):
            raise ValueError("must be -1 (automatic), 0 (none) or a band of 1 to 25 percent")
        return value

    # --- Alerts (monitoring/alerts/; docs/operations.md) ---------------------------------------
    ALERT_CHANNELS: Annotated[list[AlertChannel], NoDecode] = Field(
        default_factory=list, description="Comma list of telegram, webhook, email; empty = none."
    )
    ALERT_DEDUPE_SECONDS: int = Field(
        300, ge=0, le=86400, description="The same alert (kind and key) sends once this long."
    )
    ALERT_RATE_PER_MINUTE: int = Field(10, ge=1, le=600, description="Per channel.")
    ALERT_TIMEOUT_SECONDS: float = Field(10.0, gt=0, le=120)
    TELEGRAM_API_BASE_URL: str = "https://api.telegram.org"
    TELEGRAM_BOT_TOKEN: SecretStr | None = None
    TELEGRAM_CHAT_ID: str | None = None
    ALERT_WEBHOOK_URL: SecretStr | None = Field(
        None, description="JSON POST target; secret, as such URLs often embed a token."
    )
    # --- Telegram commands (api/telegram_commands.py; docs/operations.md) ---------------------
    TELEGRAM_COMMANDS: bool = Field(
        False,
        description="Answer /status, /positions, /pnl and /kill from the allowed chats "
        "(the process that serves the API polls the Bot API's getUpdates).",
    )
    TELEGRAM_COMMAND_CHAT_IDS: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma list of chat ids allowed to send commands; empty = TELEGRAM_CHAT_ID.",
    )
    TELEGRAM_CONFIRM_SECONDS: int = Field(
        60, ge=10, le=600, description="How long a /kill or /resume waits for its /confirm."
    )
    SMTP_HOST: str | None = None
    SMTP_PORT: int = Field(587, ge=1, le=65535, description="465 = implicit TLS.")
    SMTP_USERNAME: str | None = None
    SMTP_PASSWORD: SecretStr | None = None
    SMTP_STARTTLS: bool = True
    ALERT_EMAIL_FROM: str | None = None
    ALERT_EMAIL_TO: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma list of recipients."
    )

    @field_validator(
        "ALERT_CHANNELS",
        "ALERT_EMAIL_TO",
        "BACKTEST_DATA_DIRS",
        "TELEGRAM_COMMAND_CHAT_IDS",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("STRATEGY_PARAMS", mode="before")
    @classmethod
    def _empty_params(cls, value: Any) -> Any:
        return {} if value in ("", None) else value

    @field_validator("ENTRY_START_TIME", "ENTRY_END_TIME", "SQUARE_OFF_TIME", mode="after")
    @classmethod
    def _ist_clock_time(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("give a time of day in IST without an offset, e.g. 09:20")
        return value

    @field_validator(
        "ACCOUNT_SIZE",
        "SLIPPAGE_BPS",
        "BROKERAGE_PER_ORDER",
        "FUTURES_MARGIN_PERCENT",
        mode="after",
    )
    @classmethod
    def _finite(cls, value: Decimal) -> Decimal:
        if not value.is_finite():
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        if self.ENTRY_START_TIME >= self.ENTRY_END_TIME:
            raise ValueError("ENTRY_START_TIME must be before ENTRY_END_TIME")
        if self.ENTRY_END_TIME > self.SQUARE_OFF_TIME:
            raise ValueError("ENTRY_END_TIME must not be after SQUARE_OFF_TIME")
        if not self.PAPER_TRADING and not self.LIVE_TRADING_ENABLED:
            raise ValueError(
                "PAPER_TRADING=false needs LIVE_TRADING_ENABLED=true: live orders need the "
                "explicit switch"
            )
        if not self.PAPER_TRADING and self.MARKET is MarketSource.SIM:
            raise ValueError("live trading (PAPER_TRADING=false) cannot run on MARKET=sim")
        return self

    @model_validator(mode="after")
    def _alert_channels_ready(self) -> Settings:
        needs: dict[AlertChannel, dict[str, object]] = {
            AlertChannel.TELEGRAM: {
                "TELEGRAM_BOT_TOKEN": self.TELEGRAM_BOT_TOKEN,
                "TELEGRAM_CHAT_ID": self.TELEGRAM_CHAT_ID,
            },
            AlertChannel.WEBHOOK: {"ALERT_WEBHOOK_URL": self.ALERT_WEBHOOK_URL},
            AlertChannel.EMAIL: {
                "SMTP_HOST": self.SMTP_HOST,
                "ALERT_EMAIL_FROM": self.ALERT_EMAIL_FROM,
                "ALERT_EMAIL_TO": self.ALERT_EMAIL_TO,
            },
        }
        for channel in self.ALERT_CHANNELS:
            missing = [name for name, value in needs[channel].items() if not value]
            if missing:
                raise ValueError(f"ALERT_CHANNELS has {channel}: set {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _telegram_commands_ready(self) -> Settings:
        if self.TELEGRAM_COMMANDS:
            missing = [] if self.TELEGRAM_BOT_TOKEN else ["TELEGRAM_BOT_TOKEN"]
            if not self.telegram_command_chats:
                missing.append("TELEGRAM_COMMAND_CHAT_IDS (or TELEGRAM_CHAT_ID)")
            if missing:
                raise ValueError(f"TELEGRAM_COMMANDS=true: set {', '.join(missing)}")
        return self

    @property
    def telegram_command_chats(self) -> frozenset[str]:
        """The chat ids whose commands are answered."""
        chats = self.TELEGRAM_COMMAND_CHAT_IDS or (
            [self.TELEGRAM_CHAT_ID] if self.TELEGRAM_CHAT_ID else []
        )
        return frozenset(str(chat).strip() for chat in chats if str(chat).strip())

    @property
    def live_trading(self) -> bool:
        """Both switches are set: orders go to Upstox."""
        return not self.PAPER_TRADING and self.LIVE_TRADING_ENABLED

    @property
    def database_url(self) -> str:
        """The configured DATABASE_URL, or the embedded SQLite file in DATA_DIR."""
        if self.DATABASE_URL:
            return self.DATABASE_URL
        return f"sqlite:///{(self.DATA_DIR / 'upstox_bot.sqlite').as_posix()}"


# Settings that identify or unlock an outside account. With every SecretStr setting they are
# credentials: never shown (GET /api/v1/settings, `upstox-bot config`), never logged.
CREDENTIAL_SETTINGS = frozenset(
    {"UPSTOX_API_KEY", "TELEGRAM_CHAT_ID", "TELEGRAM_COMMAND_CHAT_IDS", "SMTP_USERNAME"}
)


def credential_names() -> frozenset[str]:
    """The names of the credential settings: CREDENTIAL_SETTINGS and every SecretStr."""
    secret = {
        name
        for name, info in Settings.model_fields.items()
        if info.annotation is SecretStr or SecretStr in get_args(info.annotation)
    }
    return CREDENTIAL_SETTINGS | secret


def credential_values(settings: Settings) -> list[str]:
    """The values of the credentials that are set (what a log must never show)."""
    values: list[str] = []
    for name in credential_names():
        value = getattr(settings, name)
        for one in value if isinstance(value, list) else [value]:
            text = one.get_secret_value() if isinstance(one, SecretStr) else one
            if text:
                values.append(str(text))
    return values


def _first_error_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"]) or "settings"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("value_error", "assertion_error") and not err["loc"]:
        return f"invalid settings: {msg}"
    given = err.get("input")
    secret = any(word in loc.upper() for word in ("SECRET", "TOKEN", "KEY", "PASSWORD"))
    showable = isinstance(given, str | int | float) and loc != "settings" and not secret
    shown = f" (got {given!r})" if showable else ""
    return f"invalid setting {loc}: {msg}{shown}"


# What a JSON setting should look like, for the one-line error when it does not parse.
JSON_EXAMPLES = {
    "STRATEGY_PARAMS": """STRATEGY_PARAMS='{"fast": 9, "slow": 21}'""",
    "CORS_ORIGINS": """CORS_ORIGINS='["http://localhost:5173"]'""",
}


def _json_error_line(exc: SettingsError) -> str:
    """pydantic-settings' 'error parsing value for field "X"' (a JSON setting that does not
    parse) as one line naming the variable and an example."""
    text = str(exc)
    name = next((n for n in Settings.model_fields if f'"{n}"' in text), None)
    if name is None:
        return f"invalid settings: {text}"
    cause = exc.__cause__ or exc.__context__
    why = f" ({cause})" if cause is not None else ""
    example = JSON_EXAMPLES.get(name)
    fix = f": write valid JSON, e.g. {example}" if example else ": write valid JSON"
    return f"invalid setting {name}: not valid JSON{why}{fix}"


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (and overrides), or raise ConfigError in one line.

    Raises:
        ConfigError: a value is invalid; the message names the variable.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_first_error_line(exc)) from None
    except SettingsError as exc:
        raise ConfigError(_json_error_line(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
