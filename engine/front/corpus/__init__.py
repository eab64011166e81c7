"""``python -m engine.corpus``: lift a corpus of clips as one resumable job (processes or Ray)."""
