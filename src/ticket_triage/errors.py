"""Errors the user can act on. The CLI prints them as one line; the service maps them to HTTP."""


class TicketTriageError(Exception):
    """Base class: the message says what was wrong and what to do about it."""


class ConfigError(TicketTriageError):
    """A configuration value, file or option is invalid."""


class DataError(TicketTriageError):
    """An input file is missing, unreadable or lacks what the pipeline needs."""


class TaxonomyError(TicketTriageError):
    """A taxonomy file is invalid, or a label it does not know was met in strict mode."""


class ModelError(TicketTriageError):
    """A model folder or hub id cannot be loaded or does not fit the request."""
