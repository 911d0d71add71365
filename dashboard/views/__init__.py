"""Dashboard pages: layout only; all data comes from dashboard.data.

Not named `pages/`: a `pages/` directory beside app.py switches Streamlit into its legacy multipage mode for
the first script runs of a server, which then runs pages/<name>.py instead of app.py's st.navigation (a blank
page under /live or /runs until someone opens /).
"""
