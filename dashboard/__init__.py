"""The Streamlit dashboard: app.py routes, pages/ lay out, data.py is the one door to storage."""
