"""Hugging Face checkpoints: finding and reading their files (hub.py, torch_pickle.py) and
converting their tensors (convert.py)."""


class CheckpointError(ValueError):
    """A checkpoint or tokenizer file that cannot be read as it is: damaged, of the wrong shape,
    or with values out of range. The message names the file, what is wrong and what to do.

    A ValueError, so `except ValueError` (and `except (FileNotFoundError, ValueError)`) catches
    it; a file that is absent altogether is a FileNotFoundError.
    """
