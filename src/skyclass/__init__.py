"""skyclass: classify survey catalog sources inside the PostgreSQL database that holds them."""

__version__ = "0.1.0"
