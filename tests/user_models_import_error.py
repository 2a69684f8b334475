"""A user's module whose own code fails while it is imported: ``--arch tests.user_models_import_error:net``
must fail in one line. Not a test module (pytest never imports it)."""

raise RuntimeError("the user's module is broken")
