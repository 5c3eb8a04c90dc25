"""Platform services over trained models: the model registry (``registry``), as-of batch and
online scoring on one shared path (``scoring``), the HTTP server (``server``)."""
