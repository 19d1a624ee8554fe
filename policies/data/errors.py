"""The one error type of the dataset package, in its own module so the frame codec and the readers share it."""


class DatasetError(ValueError):
    """A dataset is missing, truncated or of the wrong schema; the message names the file and the problem."""
