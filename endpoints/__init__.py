"""Built-in endpoints (plugins of group ``radlogger.endpoints``)."""

if __name__ != "radlogger.endpoints":  # pragma: no cover - guards the one import name
    raise ImportError(f"import radlogger.endpoints, not {__name__}: "
                      "this folder installs inside radlogger")
