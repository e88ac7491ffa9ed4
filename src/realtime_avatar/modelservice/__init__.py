"""The optional model service: heavy renderers and synthesizers on another machine (a GPU
box) behind one versioned WebSocket protocol (``protocol.py``), served by
``avatar model-service`` (``server.py``) and used by the runtime when
``AVATAR_MODEL_SERVICE_URL`` is set (``client.py``)."""
