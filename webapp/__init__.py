"""The web app's parts (``app.py`` is the page): Streamlit code on top of ``hydralanet``."""
