"""I/O drivers for the sans-IO core (installed as `gripcore.adapters`)."""
