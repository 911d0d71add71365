"""Dashboard pages: layout only; all data comes from dashboard.data."""
