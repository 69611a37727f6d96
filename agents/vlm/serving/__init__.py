"""Serving: ``visrl serve``, an HTTP server for a local policy, and the client a trainer generates through.

- ``server.py``: :class:`PolicyServer` (the OpenAI chat-completions API, plus the token-level routes for
  a transformers policy) and the ``visrl serve`` command.
- ``protocol.py``: what goes over the wire, shared by both sides: route names, request bounds, errors,
  ``data:`` image URLs, the token routes' bodies.
- ``client.py``: :class:`RemotePolicy`, a token-level policy whose ``generate`` runs on the server and
  whose weights the trainer pushes after each update.

Server and client import the protocol and never each other. This room imports only
:mod:`agents.vlm.policies`.
"""
