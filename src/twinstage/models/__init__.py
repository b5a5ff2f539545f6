"""Behaviour models: the :class:`Model` protocol and vectorised built-ins.

A model drives the twin prims whose ``twin:model`` names it. Built-ins:
``thermal``, ``pump_loop`` (the SKAB water-circulation testbed), ``sensor``
(reads another prim's attribute, converting units) and ``path_motion``.
"""

from ._base import Model, ModelError, builtin_models, parameters_hash, register_model
from ._builtin import PathMotionModel, PumpLoopModel, PumpParams, SensorModel, ThermalModel

__all__ = [
    "Model",
    "ModelError",
    "PathMotionModel",
    "PumpLoopModel",
    "PumpParams",
    "SensorModel",
    "ThermalModel",
    "builtin_models",
    "parameters_hash",
    "register_model",
]
