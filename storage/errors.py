"""The root of t2v-batch's exception tree, and the storage branch of it."""

# The pauses before trying a retryable storage failure again, after the client's own retries.
RETRY_DELAYS_S = (1.0, 4.0, 16.0)


class T2VError(Exception):
    """Base of every error t2v-batch raises on purpose; the CLI prints these in one line."""


class StorageError(T2VError):
    """Reading or writing bytes at a location failed; `retryable` when waiting may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
