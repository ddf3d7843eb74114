"""Helpers that every layer of mmeff may use and that use none of them (timing, the environment a
measurement is recorded with)."""
