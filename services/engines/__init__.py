"""What makes the music: the Engine protocol (`protocol`), the deployment's engines (`registry`),
MusicGen in this process (`local/`) and MusicGen on Replicate (`replicate/`)."""
