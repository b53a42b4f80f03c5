"""Local stand-ins for the outside services (the market data sources), for tests and the demo."""
