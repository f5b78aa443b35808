"""The HTTP application, the command-line tool and the composition root."""
