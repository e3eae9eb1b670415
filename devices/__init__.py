"""Built-in instrument drivers and their simulators (plugins of group ``radlogger.devices``)."""

if __name__ != "radlogger.devices":  # pragma: no cover - guards the one import name
    raise ImportError(f"import radlogger.devices, not {__name__}: "
                      "this folder installs inside radlogger")
