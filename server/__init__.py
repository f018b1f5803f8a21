"""The wattserve serving process."""
