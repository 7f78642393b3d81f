"""The web app: the engine behind it (models, requests, workers) and its Streamlit layout."""
