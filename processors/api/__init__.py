"""The read API and the live revenue page, both fed by the Redis view."""
