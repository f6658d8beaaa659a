"""The read-only HTTP service for archive portals (IVOA TAP and SCS, a JSON API)."""
