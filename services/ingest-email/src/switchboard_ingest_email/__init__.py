"""Switchboard ingest-email: SMTP and IMAP ingest that never loses a message."""
