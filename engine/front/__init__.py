"""The user front end: reading keypoint files, layouts, writing results, the API and the CLIs.

Depends on :mod:`engine.core`, never the other way round.
"""
