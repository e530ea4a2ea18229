"""SMTP: the client somsd sends customer mail with, and a loopback server for tests/the demo."""

from adapters.smtp.client import SmtpPool, SmtpSettings, check_connection, smtp_error

__all__ = ["SmtpPool", "SmtpSettings", "check_connection", "smtp_error"]
