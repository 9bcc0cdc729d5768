"""Errors lgf reports to its user. Each says what is at fault and, where it can, how to fix it.

    LgfError
    ├── ConfigError        a key of plugins.toml; carries the key path ("sinks[1].path")
    ├── PluginError        a plugin that failed to load or answer; carries the plugin's name
    ├── TargetRefused      a process or binary lgf will not trace (not Go, unknown layout ...)
    └── DeliveryError      a sink could not deliver; ``retryable`` says whether to try again
"""

from __future__ import annotations


class LgfError(Exception):
    """Base of every error lgf raises on purpose."""


class ConfigError(LgfError):
    def __init__(self, path: str, message: str, hint: str = ""):
        self.path, self.message, self.hint = path, message, hint
        text = f"{path}: {message}" if path else message
        super().__init__(f"{text} ({hint})" if hint else text)


class ConfigErrors(LgfError):
    """Every problem of one config at once, so one `lgf check` shows them all."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class PluginError(LgfError):
    def __init__(self, plugin: str, message: str):
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class TargetRefused(LgfError):
    """A process or binary that cannot be traced; the message is one line saying which and why."""


class DeliveryError(LgfError):
    def __init__(self, message: str, retryable: bool = True):
        self.retryable = retryable
        super().__init__(message)
