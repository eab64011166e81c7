"""The exceptions the library raises for its users' inputs.

:class:`InputError` is a bad input (keypoints, settings, files, checkpoints) described in one
line; the command lines print it and exit with status 2, the Python API lets it propagate.
"""
from __future__ import annotations


class InputError(ValueError):
    """A user input that cannot be lifted; the message is one line."""
