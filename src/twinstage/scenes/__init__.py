"""Sample twin scenes: the SKAB pump testbed and a large factory generator."""

from ._factory import generate_factory
from ._meshes import box, cylinder
from ._pump_testbed import SENSORS, build_pump_testbed

__all__ = ["SENSORS", "box", "build_pump_testbed", "cylinder", "generate_factory"]
