"""The web UI of ``glidectl ui``: a gradio app (``app``) over a gradio-free backend."""
