"""Helpers shared by test packages (real registry rows, never mocks)."""
