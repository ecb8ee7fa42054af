"""One module per DVC stage: read the stage's params, resolve paths (qmr.paths), call the core,
write outputs, metrics and plots. Each exposes ``run(params, **options)``."""


class UserError(RuntimeError):
    """A problem the user can fix (bad input, missing upstream output): reported without traceback."""
