"""Entry point for `python app.py` and Hugging Face Spaces: serve the app on the default project."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

if __name__ == "__main__":
    import sys

    from tl_app import config
    from tl_app.errors import TLError
    from tl_app.ui.app import launch

    on_space = bool(os.environ.get("SPACE_ID"))
    try:
        launch(os.environ.get("TL_PROJECT") or config.default_project_dir(),
               host="0.0.0.0" if on_space else config.default_host(),
               port=int(os.environ.get("PORT", os.environ.get("GRADIO_SERVER_PORT", config.DEFAULT_PORT))))
    except TLError as e:  # e.g. a network address without TL_AUTH: say what to do, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
