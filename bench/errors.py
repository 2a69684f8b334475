"""The error every bench module raises for a measurement that cannot run as asked."""


class BenchError(ValueError):
    """A benchmark that cannot run as asked; the message says why and what to do."""
