"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class GlidectlError(Exception):
    """A problem with the user's input, files or environment, said in one sentence."""

    exit_code = 2


class ConfigError(GlidectlError):
    """A glide.toml or ``--set`` value that is unknown, mistyped or malformed."""


class PluginError(GlidectlError):
    """A plugin that failed to load or registered a name twice."""
