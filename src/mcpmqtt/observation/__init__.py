"""What the server learns by watching traffic: payload shapes inferred per topic."""

from mcpmqtt.observation.shapes import ShapeObserver, ShapeRecord

__all__ = ["ShapeObserver", "ShapeRecord"]
