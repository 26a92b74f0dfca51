"""`UserError`: what every error ltjax raises for a problem the user can fix is, besides its own type (`ConfigError`
for a config).

Its message is the whole story (what, where, how to fix), so the commands print it alone (`ltjax.commands`); any
other exception is a bug, and keeps its traceback.
"""


class UserError(Exception):
    """A problem with what the user asked or gave (a config, data, a checkpoint, a workdir), described in full."""


class ConfigError(UserError, ValueError):
    """A config that cannot run as written: an unknown key, a bad value, a phase outside the run."""
