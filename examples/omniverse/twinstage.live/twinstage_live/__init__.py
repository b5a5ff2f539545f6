"""twinstage live: stream a twinstage bridge into the stage open in Omniverse Kit.

``client`` and ``usd_writer`` need only ``websockets``/``numpy`` and ``pxr``; the extension
class is imported only inside Kit (where ``omni.ext`` exists).
"""

try:
    import omni.ext  # noqa: F401
except ImportError:  # outside Kit: the client and the USD writer are usable on their own
    pass
else:
    from .extension import TwinstageLiveExtension  # noqa: F401
