"""Email channel: one message per alert over SMTP (STARTTLS or implicit TLS, optional login)."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from pydantic import SecretStr

from upstox_bot.monitoring.alerts.delivery import AlertDeliveryError
from upstox_bot.monitoring.alerts.model import Alert


class EmailNotifier:
    """Sends each alert as a plain-text email; connects per alert (alerts are rare)."""

    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        username: str | None = None,
        password: SecretStr | None = None,
        starttls: bool = True,
        implicit_tls: bool = False,
        timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Set up the channel.

        Args:
            starttls: upgrade the plain connection with STARTTLS before logging in.
            implicit_tls: TLS from the first byte (SMTPS, port 465); starttls is then moot.
            ssl_context: the TLS context; default the system's trusted CAs.
        """
        if not recipients:
            raise ValueError("an email channel needs at least one recipient")
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self.username = username
        self._password = password
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.timeout_s = timeout_s
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        return f"EmailNotifier(host={self.host!r}, port={self.port}, to={self.recipients!r})"

    def message(self, alert: Alert) -> EmailMessage:
        """The email for one alert: subject with severity and title, the alert text as body."""
        msg = EmailMessage()
        prefix = f"[upstox-bot {alert.account}]" if alert.account else "[upstox-bot]"
        msg["Subject"] = f"{prefix} {alert.severity.value.upper()}: {alert.title}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = format_datetime(alert.at)
        msg["Message-ID"] = make_msgid(domain="upstox-bot.local")
        msg["X-Upstox-Bot-Alert"] = alert.kind.value
        msg.set_content(alert.as_text())
        return msg

    def send(self, alert: Alert) -> None:
        """Send the alert.

        Raises:
            AlertDeliveryError: connecting or sending failed; 4xx replies and lost connections
                are retryable, refusals (5xx, bad login, bad recipients) are not.
        """
        try:
            self._send(self.message(alert))
        except smtplib.SMTPAuthenticationError as exc:
            raise AlertDeliveryError(f"login refused ({exc.smtp_code})", retryable=False) from None
        except smtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(f"{addr} ({code})" for addr, (code, _) in exc.recipients.items())
            raise AlertDeliveryError(f"recipients refused: {refused}", retryable=False) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise AlertDeliveryError(f"{exc}", retryable=False) from None
        except smtplib.SMTPResponseException as exc:
            reply = _decode(exc.smtp_error)
            raise AlertDeliveryError(
                f"server replied {exc.smtp_code} {reply}".rstrip(),
                retryable=400 <= exc.smtp_code < 500,
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise AlertDeliveryError(
                f"TLS certificate not trusted: {exc.verify_message}", retryable=False
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            text = str(exc) or type(exc).__name__
            raise AlertDeliveryError(f"{text}", retryable=True) from None

    def _send(self, msg: EmailMessage) -> None:
        context = self._ssl_context or ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.implicit_tls:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        with smtp:
            smtp.ehlo()
            if self.starttls and not self.implicit_tls:
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                password = self._password.get_secret_value() if self._password else ""
                smtp.login(self.username, password)
            smtp.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)

    def close(self) -> None:
        """Nothing to release: each alert uses its own connection."""


def _decode(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())[:200]
