"""MRT Studio: the Streamlit front end of the mrt_core engine (shared helpers of the pages)."""
