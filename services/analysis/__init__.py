"""What a take holds: its tempo and key, its stems (demucs), its notes as MIDI (basic-pitch)."""
