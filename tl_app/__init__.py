"""tl_app: build an image classifier without code.

The core (project store, import, download, training, review, prediction)
knows nothing of Gradio; ``tl_app.ui`` wires it to a web app and
``tl_app.cli`` to the command line. Importing this package does nothing else.
"""

__version__ = "0.1.0"
