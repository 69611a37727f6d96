"""Vision-language policies on the text interface: the tiny offline model, the chat formatter."""
