"""Feature visualisation tools (``cnnvis maximize``)."""
