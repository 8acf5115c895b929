"""The image check: ``python -m deploy.image.check`` (``make image-check``) builds
deploy/Dockerfile with podman on a local stand-in for ``python:3.11-slim-bookworm``, checks what
the image holds and runs each service from it the way Compose does. See docs/image.md."""
