"""The generation engine (see processing for the job runner while it moves here)."""
