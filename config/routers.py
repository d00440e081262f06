from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """Routes that answer with or without the trailing slash (/contacts and /contacts/)."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"
