"""The Streamlit dashboard: app.py routes, views/ lay out, data.py is the one door to storage."""
