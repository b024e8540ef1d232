"""The service layer: use cases (`service`), typed requests, the worker and callbacks, assembled by `runtime`."""
