"""The browser console served by the daemon at `/console` (see app.py)."""

from somsd.console.app import ConsoleDeps, build_console, with_console

__all__ = ["ConsoleDeps", "build_console", "with_console"]
