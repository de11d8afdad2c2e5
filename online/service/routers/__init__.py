"""One router per resource: features, push, health and metrics."""
