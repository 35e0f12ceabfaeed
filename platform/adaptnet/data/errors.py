"""The one error type of the data package."""


class DataError(ValueError):
    """A dataset that cannot be used; the message is one line naming the field (usually data.dataset)."""
